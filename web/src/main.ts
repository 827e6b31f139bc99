/**
 * The app's entry: wires the key screen to the key-file, key-store and crypto modules. Everything
 * secret stays in this page: a key file is decrypted here, a new identity is made here, and a key
 * leaves the page only as a passphrase-wrapped key file (kept in IndexedDB, or downloaded).
 */

import { toHex } from "./bytes.js";
import { fingerprint, Identity, loadSodium } from "./crypto.js";
import { decodeIdentity, encodeIdentity, KeyFileError, WrongPassphraseError } from "./keyfile.js";
import { forgetKeyFile, loadKeyFile, saveKeyFile } from "./keystore.js";
import { closeApp, openApp, wireApp } from "./app.js";
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

/** A key is open on this page (the stored key's unlock form is then folded away with the others). */
let unlocked = false;

function show(identity: Identity): void {
  unlocked = true;
  element("patient-id").textContent = toHex(computePatientId(identity.public.signKey));
  element("fingerprint").textContent = fingerprint(identity.public.signKey);
  element("identity").hidden = false;
  // The key is open: the forms to open or create another fold away (a click shows them again).
  element<HTMLDetailsElement>("key-forms").open = false;
  element("unlock-form").hidden = true;
  element<HTMLDetailsElement>("key-stored").open = false; // export and forget: one click away
  void openApp(identity);
}

function download(text: string, name: string): void {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  link.download = name;
  link.click();
  URL.revokeObjectURL(link.href);
}

async function showStoredKey(): Promise<void> {
  const stored = await loadKeyFile();
  element("unlock-form").hidden = stored === null || unlocked;
  element("key-stored").hidden = stored === null;
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
    const data = new Uint8Array(await file.arrayBuffer());
    show(await decodeIdentity(data, passphrase, file.name));
    await saveKeyFile(new TextDecoder().decode(data)); // valid UTF-8: it just decoded as a key file
    await showStoredKey();
    say("Key file opened on this device, and kept in this browser wrapped by its passphrase.");
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
    await saveKeyFile(text);
    download(text, "patient.key");
    show(identity);
    await showStoredKey();
    say("Identity created. Keep the downloaded key file and its passphrase safe: they are your only copy.");
  } catch (error) {
    say(explain(error), true);
  }
}

async function onUnlock(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const stored = await loadKeyFile();
  if (stored === null) return say("No key is kept in this browser.", true);
  say("Unlocking (the passphrase is stretched on purpose)…");
  try {
    show(await decodeIdentity(stored, element<HTMLInputElement>("unlock-passphrase").value, "the stored key"));
    say("Unlocked on this device.");
  } catch (error) {
    say(explain(error), true);
  }
}

async function onExport(): Promise<void> {
  const stored = await loadKeyFile();
  if (stored === null) return say("No key is kept in this browser.", true);
  download(stored, "patient.key");
  say("Key file exported. It opens with its passphrase, here or with `medledger patient --key`.");
}

async function onForget(): Promise<void> {
  await forgetKeyFile();
  closeApp();
  unlocked = false;
  element("identity").hidden = true;
  element<HTMLDetailsElement>("key-forms").open = true;
  await showStoredKey();
  say("This browser no longer keeps your key.");
}

async function start(): Promise<void> {
  await loadSodium();
  await showStoredKey();
  wireApp();
  element<HTMLFormElement>("unlock-form").addEventListener("submit", (e) => void onUnlock(e));
  element("export-key").addEventListener("click", () => void onExport());
  element("forget-key").addEventListener("click", () => void onForget());
  element<HTMLFormElement>("import-form").addEventListener("submit", (e) => void onImport(e));
  element<HTMLFormElement>("create-form").addEventListener("submit", (e) => void onCreate(e));
  say("Ready. Nothing you do on this page leaves it unencrypted.");
}

// The app shell works offline and installs (public/sw.js caches the page and its files, never the API).
if ("serviceWorker" in navigator) void navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => undefined);

start().catch(() => say("This browser cannot run the app's cryptography (WebAssembly is needed).", true));
