/**
 * What a grant would cover (health/types.py `is_covered`, health/preview.py), and the narrowing a
 * patient may apply before approving. The ledger's grant keeps its inquiry's scope, purpose and
 * expiry; what the grantee can read is exactly the records whose keys the grant re-seals. So a
 * narrowed approval re-seals only the covered records the patient kept: fewer record types, a
 * shorter window (by the block time a record was written, as the scope's window is). Pure.
 */

import { compareBytes } from "./bytes.js";
import type { RecordState, Scope } from "./wire.js";

export function isCovered(scope: Scope, record: Pick<RecordState, "record_id" | "record_type" | "time_ms">): boolean {
  if (record.time_ms < scope.from_ms || record.time_ms > scope.to_ms) return false;
  if (scope.record_types.length === 0 && scope.record_ids.length === 0) return true;
  return scope.record_types.includes(record.record_type) || scope.record_ids.some((id) => compareBytes(id, record.record_id) === 0);
}

export interface Narrowing {
  /** Record types kept (null: all the scope covers). */
  readonly recordTypes: ReadonlySet<string> | null;
  /** A window inside the scope's, by block time (milliseconds, inclusive). */
  readonly fromMs: bigint;
  readonly toMs: bigint;
}

/** The records a grant re-seals: covered by the inquiry, kept by the narrowing, sorted by id. */
export function selectGrantRecords<R extends { readonly state: Pick<RecordState, "record_id" | "record_type" | "time_ms"> }>(
  scope: Scope,
  records: readonly R[],
  narrowing: Narrowing | null,
): R[] {
  return records
    .filter(({ state }) => isCovered(scope, state))
    .filter(
      ({ state }) =>
        narrowing === null ||
        ((narrowing.recordTypes === null || narrowing.recordTypes.has(state.record_type)) &&
          state.time_ms >= narrowing.fromMs &&
          state.time_ms <= narrowing.toMs),
    )
    .sort((a, b) => compareBytes(a.state.record_id, b.state.record_id));
}
