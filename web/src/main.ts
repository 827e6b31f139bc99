/**
 * The app's entry: wires the key screen to the key-file and crypto modules. Everything secret
 * stays in this page: a key file is decrypted here, a new identity is made here and leaves only
 * as a passphrase-wrapped key file the patient downloads.
 */

import { toHex } from "./bytes.js";
import { fingerprint, Identity, loadSodium } from "./crypto.js";
import { decodeIdentity, encodeIdentity, KeyFileError, WrongPassphraseError } from "./keyfile.js";
import { computePatientId } from "./txs.js";

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const status = element<HTMLParagraphElement>("status");

function say(message: string, isError = false): void {
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function show(identity: Identity): void {
  element("patient-id").textContent = toHex(computePatientId(identity.public.signKey));
  element("fingerprint").textContent = fingerprint(identity.public.signKey);
  element("identity").hidden = false;
}

function explain(error: unknown): string {
  if (error instanceof WrongPassphraseError) return "That passphrase does not open this key file.";
  if (error instanceof KeyFileError) return `This is not a key file medledger can open: ${error.message}`;
  return "Something went wrong on this device; nothing was sent anywhere.";
}

async function onImport(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const file = element<HTMLInputElement>("key-file").files?.[0];
  const passphrase = element<HTMLInputElement>("import-passphrase").value;
  if (file === undefined) return say("Choose your key file first.", true);
  say("Opening the key file (this takes a moment: the passphrase is stretched on purpose)…");
  try {
    show(await decodeIdentity(new Uint8Array(await file.arrayBuffer()), passphrase, file.name));
    say("Key file opened on this device.");
  } catch (error) {
    say(explain(error), true);
  }
}

async function onCreate(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const passphrase = element<HTMLInputElement>("create-passphrase").value;
  say("Creating your identity and wrapping it with your passphrase…");
  try {
    const identity = Identity.generate();
    const text = await encodeIdentity(identity, passphrase);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    link.download = "patient.key";
    link.click();
    URL.revokeObjectURL(link.href);
    show(identity);
    say("Identity created. Keep the downloaded key file and its passphrase safe: they are your only copy.");
  } catch (error) {
    say(explain(error), true);
  }
}

async function start(): Promise<void> {
  await loadSodium();
  element<HTMLFormElement>("import-form").addEventListener("submit", (e) => void onImport(e));
  element<HTMLFormElement>("create-form").addEventListener("submit", (e) => void onCreate(e));
  say("Ready. Nothing you do on this page leaves it unencrypted.");
}

start().catch(() => say("This browser cannot run the app's cryptography (WebAssembly is needed).", true));
