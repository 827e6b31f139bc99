/**
 * The patient's key kept in this browser (IndexedDB), only ever as the key file: the secrets
 * encrypted under the passphrase (argon2id, then secretbox: keyfile.ts), never in the clear. So
 * what is stored is exactly what a backup exports and what `medledger patient --key` reads, and
 * someone with the browser's storage but not the passphrase has nothing they can use.
 */

import { decodePublicIdentity } from "./keyfile.js";

const DATABASE = "medledger";
const STORE = "keys";
const PATIENT_KEY = "patient";

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function openDatabase(): Promise<IDBDatabase> {
  const opening = indexedDB.open(DATABASE, 1);
  opening.onupgradeneeded = () => opening.result.createObjectStore(STORE);
  return request(opening);
}

async function withStore<T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await openDatabase();
  try {
    const tx = db.transaction(STORE, mode);
    // Listen for the end of the transaction before anything can end it: only `complete` says the
    // change is durable (a page reloaded after a request's `success` may still find the old value).
    const done = new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
    const result = await request(act(tx.objectStore(STORE)));
    await done;
    return result;
  } finally {
    db.close();
  }
}

/** Keep this key file (checked to be one) as the patient's key in this browser. */
export async function saveKeyFile(keyFile: string): Promise<void> {
  decodePublicIdentity(keyFile); // refuses anything that is not a key file before it is stored
  await withStore("readwrite", (store) => store.put(keyFile, PATIENT_KEY));
}

/** The stored key file, or null when this browser holds none. */
export async function loadKeyFile(): Promise<string | null> {
  const value: unknown = await withStore("readonly", (store) => store.get(PATIENT_KEY));
  return typeof value === "string" ? value : null;
}

export async function forgetKeyFile(): Promise<void> {
  await withStore("readwrite", (store) => store.delete(PATIENT_KEY));
}
