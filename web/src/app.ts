/**
 * The patient's screens once a key is unlocked: pin the network (genesis), register if needed,
 * follow and verify the chain, then records, requests, who can see my data, access history,
 * representatives and export, kept current by the live event stream. Each screen module renders
 * from the session's verified snapshot; this module wires navigation, actions and status.
 */

import { NodeApi, NodeError } from "./api.js";
import { fromHex, toHex } from "./bytes.js";
import type { Identity } from "./crypto.js";
import { element, fill, h } from "./dom.js";
import { LiveStream } from "./live.js";
import { buildRequestAmendment } from "./rights.js";
import { renderClaims } from "./screens/claims.js";
import { renderGrants, renderRequests, type ConsentHooks } from "./screens/consent.js";
import { renderHistory, renderRepresentatives } from "./screens/history.js";
import { renderResearch } from "./screens/research.js";
import { exportBundle, renderRecords } from "./screens/records.js";
import { loadGenesisPin, NodeNotBelievedError, openLedger, Session } from "./session.js";
import { buildRegisterPatient, buildRequestRecords, computePatientId } from "./txs.js";

/** Bits of an event number below its block height (health/events.py TX_INDEX_BITS + EVENT_INDEX_BITS). */
const EVENT_SEQ_HEIGHT_SHIFT = 24n;

const SCREENS = ["records", "requests", "grants", "claims", "research", "history", "representatives"] as const;

let current: { session: Session; live: LiveStream | null; hooks: ConsentHooks } | null = null;

function say(message: string, isError = false): void {
  const status = element("app-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function explain(exc: unknown): string {
  if (exc instanceof NodeNotBelievedError) return exc.message;
  if (exc instanceof NodeError) return `The node could not answer: ${exc.message}.`;
  if (exc instanceof Error && exc.message) return `Not done: ${exc.message}.`;
  return "Something went wrong on this device; nothing was signed.";
}

function showScreen(name: string): void {
  for (const screen of SCREENS) {
    element(`screen-${screen}`).hidden = screen !== name;
    const tab = element(`tab-${screen}`);
    tab.setAttribute("aria-current", screen === name ? "page" : "false");
  }
}

function authorName(session: Session, key: Uint8Array): string {
  const found = session.ledger.institutions.get(toHex(key));
  return found ? `${found.name} (${found.role})` : "an unknown author";
}

/** What the patient was doing in the screens: typed values, ticks, unfolded parts, focus. */
interface UiState {
  readonly values: Map<string, string | boolean>;
  readonly open: Set<string>;
  readonly focus: string | null;
}

function captureUi(root: HTMLElement): UiState {
  const values = new Map<string, string | boolean>();
  for (const input of Array.from(root.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input[id], select[id]")))
    values.set(input.id, input instanceof HTMLInputElement && input.type === "checkbox" ? input.checked : input.value);
  const open = new Set(
    Array.from(root.querySelectorAll<HTMLDetailsElement>("details[id]"))
      .filter((d) => d.open)
      .map((d) => d.id),
  );
  const active = document.activeElement;
  return { values, open, focus: active instanceof HTMLElement && active.id && root.contains(active) ? active.id : null };
}

/** A live update re-renders the screens; what the patient had typed or unfolded stays as it was. */
function restoreUi(root: HTMLElement, ui: UiState): void {
  for (const [id, value] of ui.values) {
    const input = document.getElementById(id);
    if (!(input instanceof HTMLInputElement || input instanceof HTMLSelectElement) || !root.contains(input)) continue;
    if (input instanceof HTMLInputElement && input.type === "checkbox") input.checked = value === true;
    else if (typeof value === "string") input.value = value;
    input.dispatchEvent(new Event("change", { bubbles: true })); // a narrowing recounts what it shares
  }
  for (const id of ui.open) {
    const details = document.getElementById(id);
    if (details instanceof HTMLDetailsElement) details.open = true;
  }
  if (ui.focus !== null) document.getElementById(ui.focus)?.focus();
}

function render(session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const screens = element("screens");
  const ui = captureUi(screens);
  renderRecords(
    element("records"),
    snapshot,
    (key) => authorName(session, key),
    session.nodeName,
    (record, blobId) => session.readAttachment(record, blobId),
    say,
    (record, text) => {
      const author = session.ledger.institutions.get(toHex(record.state.author));
      if (author === undefined) return say("This record's author is not an institution of this network.", true);
      hooks.act(`Asking ${author.name} to correct the record`, async () => {
        await session.submit(buildRequestAmendment(session.identity, record.state, text, author.enc_key, { chainId: session.ledger.chainId }));
      });
    },
  );
  renderRequests(element("requests"), session, hooks);
  renderGrants(element("grants"), session, hooks);
  renderClaims(element("claims"), session, hooks);
  renderResearch(element("research"), session, hooks);
  renderHistory(element("history"), session);
  renderRepresentatives(element("representatives"), session, hooks);
  const pending = snapshot.inquiries.filter((i) => i.state.status === "open" && i.state.expires_ms > session.ledger.head.timeMs).length;
  element("tab-requests").textContent = pending ? `Requests (${pending})` : "Requests";
  element("verified-height").textContent = `Verified up to block ${session.ledger.head.height}`;
  restoreUi(screens, ui);
}

/** Refreshes run one at a time; a request for one while another runs makes one more after it. */
function makeRefresher(session: Session, hooks: ConsentHooks): () => Promise<void> {
  let running: Promise<void> | null = null;
  let again = false;
  const run = async (): Promise<void> => {
    do {
      again = false;
      await session.refresh();
      render(session, hooks);
    } while (again);
  };
  return () => {
    if (running !== null) {
      again = true;
      return running;
    }
    running = run().finally(() => {
      running = null;
    });
    return running;
  };
}

async function ensureRegistered(api: NodeApi, session: Session): Promise<boolean> {
  try {
    await api.getSigned(session.signer, api.patientPath(session.signer, ""));
    return true;
  } catch (exc) {
    if (exc instanceof NodeError && (exc.status === 403 || exc.status === 404)) return false;
    throw exc;
  }
}

export async function openApp(identity: Identity): Promise<void> {
  current?.live?.stop();
  current = null;
  element("app").hidden = false;
  performance.mark("medledger:open");
  say("Checking the network against the genesis this page pinned…");
  const api = new NodeApi();
  try {
    const { ledger, firstUse } = await openLedger(api, loadGenesisPin());
    element("genesis-hash").textContent = toHex(ledger.head.genesisHash);
    element("genesis-first-use").hidden = !firstUse;
    const session = new Session(api, identity, computePatientId(identity.public.signKey), ledger);
    let busy = false;
    const hooks: ConsentHooks = {
      act(what, run) {
        // One signed action at a time: a second click would sign a second, conflicting tx.
        if (busy) return say("Wait: the previous action is still being written to the ledger.", true);
        busy = true;
        element("screens").setAttribute("aria-busy", "true");
        say(`${what}: signing on this device and waiting for the ledger…`);
        void run()
          .then(() => refresh())
          .then(() => say(`${what}: done, and verified on the ledger.`))
          .catch((exc: unknown) => say(explain(exc), true))
          .finally(() => {
            busy = false;
            element("screens").removeAttribute("aria-busy");
          });
      },
    };
    const refresh = makeRefresher(session, hooks);
    current = { session, live: null, hooks };
    fill(
      element("records-request-institution"),
      ...[...ledger.institutions.values()].map((i) => h("option", { value: toHex(i.sign_key) }, `${i.name} (${i.role})`)),
    );
    if (!(await ensureRegistered(api, session))) {
      const button = h("button", { type: "button", id: "register" }, "Register with this network");
      fill(element("register-area"), h("p", {}, "Your key is not registered on this network yet. Registering puts only your public keys on the ledger."), button);
      element("register-area").hidden = false;
      say("Not registered yet.");
      await new Promise<void>((resolve) => {
        button.addEventListener("click", () => {
          say("Registering: signing on this device…");
          api
            .postTx(buildRegisterPatient(identity, { chainId: ledger.chainId }).raw)
            .then(() => resolve())
            .catch((exc: unknown) => say(explain(exc), true));
        });
      });
      element("register-area").hidden = true;
    }
    say("Verifying the chain and your records…");
    await refresh();
    element("screens").hidden = false;
    // From the key being open to the records screen shown (scripts/bench_app.py reads it).
    performance.measure("medledger:first-render", "medledger:open");
    say("Everything shown was verified against the ledger and decrypted on this device.");
    const live = new LiveStream(
      api,
      session.signer,
      {
        onEvent: () => void refresh().catch((exc: unknown) => say(explain(exc), true)),
        onState: (connected) => {
          element("live").textContent = connected ? "Live: new requests and reads appear here as they happen." : "Live updates: reconnecting…";
        },
      },
      ((ledger.head.height + 1n) << EVENT_SEQ_HEIGHT_SHIFT) - 1n,
    );
    current.live = live;
    live.start();
  } catch (exc) {
    say(explain(exc), true);
  }
}

export function closeApp(): void {
  current?.live?.stop();
  current = null;
  element("app").hidden = true;
  element("screens").hidden = true;
}

export function wireApp(): void {
  for (const screen of SCREENS) element(`tab-${screen}`).addEventListener("click", () => showScreen(screen));
  element("export-records").addEventListener("click", () => {
    const snapshot = current?.session.snapshot;
    if (!snapshot) return say("Nothing to export yet.", true);
    exportBundle(snapshot);
    say("Exported your records as a FHIR R4 Bundle file (decrypted: keep it safe).");
  });
  element<HTMLFormElement>("records-request-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (current === null) return;
    const { session, hooks } = current;
    const institution = element<HTMLSelectElement>("records-request-institution");
    const from = element<HTMLInputElement>("records-request-from").value;
    const name = institution.selectedOptions[0]?.textContent ?? "the institution";
    hooks.act(`Asking ${name} for your records`, () =>
      session.submit(
        buildRequestRecords(
          session.identity,
          session.patientId,
          fromHex(institution.value),
          from ? { fromMs: BigInt(Date.parse(`${from}T00:00:00Z`)) } : {},
          { chainId: session.ledger.chainId },
        ),
      ),
    );
  });
  showScreen("records");
}
