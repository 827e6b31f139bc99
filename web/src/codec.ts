/**
 * The canonical codec of `chain/codec.py`, byte for byte: every wire structure has exactly one
 * encoding, a msgpack map whose keys are the field names in sorted order, `bin` for bytes, `str`
 * for text, the shortest unsigned integer form, no floats, no extension types.
 *
 * Decoding is as strict as the Python side's: the byte size is checked before parsing, every
 * declared length is bounded by the bytes that remain (no allocation a hostile node can inflate),
 * nesting is bounded, unknown or missing fields, fields out of order, wrong types, out-of-range
 * integers and bad lengths are refused, and finally the value is re-encoded and must equal the
 * input, so no other encoding of a value (a non-minimal integer, str for bin) is ever accepted.
 * Every failure is a `CodecError`. Test vectors made by the Python codec
 * (`scripts/make_web_vectors.py`) keep the two identical.
 *
 * Values: an unsigned integer is a `bigint` (the wire allows 2^64 - 1), bytes a `Uint8Array`,
 * text a `string`, a nested structure an object, a sequence a readonly array.
 */

import { equalBytes, utf8, utf8Strict } from "./bytes.js";

export class CodecError extends Error {
  override readonly name = "CodecError";
}

/** Deepest nesting the codec accepts (chain/limits.py DEPTH_MAX). */
export const DEPTH_MAX = 8;
/** Largest unsigned integer on the wire (chain/limits.py UINT_MAX). */
export const UINT_MAX = 2n ** 64n - 1n;

export interface UIntSpec {
  readonly kind: "uint";
  readonly min: bigint;
  readonly max: bigint;
}
export interface BytesSpec {
  readonly kind: "bytes";
  readonly min: number;
  readonly max: number;
}
/** Printable ASCII identifiers and code lists (`Text` in Python). */
export interface TextSpec {
  readonly kind: "text";
  readonly min: number;
  readonly max: number;
  readonly allowed: ReadonlySet<string> | null;
}
/** Text a person reads: printable Unicode in NFC, bounded in characters and UTF-8 bytes. */
export interface HumanTextSpec {
  readonly kind: "human";
  readonly min: number;
  readonly max: number;
  readonly maxBytes: number;
}
export interface StructSpec {
  readonly kind: "struct";
  readonly schema: AnySchema;
}
export interface SeqSpec {
  readonly kind: "seq";
  readonly item: Spec;
  readonly maxItems: number;
}
export type Spec = UIntSpec | BytesSpec | TextSpec | HumanTextSpec | StructSpec | SeqSpec;

export interface AnySchema {
  readonly name: string;
  /** Field names in sorted order, with their specs. */
  readonly fields: readonly (readonly [string, Spec])[];
}
/** A wire type's schema; `T` is the shape of its values (a phantom: never read at run time). */
export interface Schema<T> extends AnySchema {
  readonly __value?: T;
}

export const uint = (max: bigint = UINT_MAX, min: bigint = 0n): UIntSpec => ({ kind: "uint", min, max });
export const bytes = (max: number, min = 0): BytesSpec => ({ kind: "bytes", min, max });
export const fixedBytes = (length: number): BytesSpec => bytes(length, length);
export const text = (max: number, min = 1, allowed: readonly string[] | null = null): TextSpec => ({
  kind: "text",
  min,
  max,
  allowed: allowed === null ? null : new Set(allowed),
});
export const humanText = (max: number, maxBytes: number, min = 1): HumanTextSpec => ({
  kind: "human",
  min,
  max,
  maxBytes,
});
export const struct = (schema: AnySchema): StructSpec => ({ kind: "struct", schema });
export const seq = (item: Spec, maxItems: number): SeqSpec => ({ kind: "seq", item, maxItems });

/** Declare a schema; fields are sorted here, as Python's codec sorts `WIRE_FIELDS`. */
export function schema<T>(name: string, fields: { readonly [K in keyof T]: Spec }): Schema<T> {
  const entries = Object.entries(fields) as [string, Spec][];
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { name, fields: entries };
}

// --- checks shared by encoding and decoding ------------------------------------------------------

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
// Python's str.isprintable(): no character of the categories Other (Cc, Cf, Cs, Co, Cn) or
// Separator (Zl, Zp, Zs) but the ASCII space. A lone surrogate is Cs, so it is refused too.
const NOT_PRINTABLE = /(?! )[\p{C}\p{Z}]/u;

/** Whether `value` is text a person wrote in its one wire form (codec.py `is_human_text`). */
export function isHumanText(value: string, min: number, max: number, maxBytes: number): boolean {
  const length = [...value].length;
  if (length < min || length > max || NOT_PRINTABLE.test(value)) return false;
  return utf8.encode(value).length <= maxBytes && value.normalize("NFC") === value;
}

function check(spec: Spec, value: unknown, where: string, depth: number): void {
  switch (spec.kind) {
    case "uint":
      if (typeof value !== "bigint") throw new CodecError(`${where}: expected an integer`);
      if (value < spec.min || value > spec.max)
        throw new CodecError(`${where}: ${value} is outside [${spec.min}, ${spec.max}]`);
      return;
    case "bytes":
      if (!(value instanceof Uint8Array)) throw new CodecError(`${where}: expected binary data`);
      if (value.length < spec.min || value.length > spec.max) {
        throw new CodecError(
          spec.min === spec.max
            ? `${where}: expected ${spec.max} bytes, got ${value.length}`
            : `${where}: length ${value.length} is outside [${spec.min}, ${spec.max}]`,
        );
      }
      return;
    case "text":
      if (typeof value !== "string") throw new CodecError(`${where}: expected a string`);
      if (value.length < spec.min || value.length > spec.max)
        throw new CodecError(`${where}: length ${value.length} is outside [${spec.min}, ${spec.max}]`);
      if (!PRINTABLE_ASCII.test(value)) throw new CodecError(`${where}: only printable ASCII is allowed`);
      if (spec.allowed !== null && !spec.allowed.has(value))
        throw new CodecError(`${where}: ${JSON.stringify(value)} is not an allowed value`);
      return;
    case "human":
      if (typeof value !== "string") throw new CodecError(`${where}: expected a string`);
      if (!isHumanText(value, spec.min, spec.max, spec.maxBytes))
        throw new CodecError(
          `${where}: expected ${spec.min} to ${spec.max} printable characters ` +
            `(at most ${spec.maxBytes} bytes of UTF-8) in Unicode NFC`,
        );
      return;
    case "struct":
      checkStruct(spec.schema, value, where, depth + 1);
      return;
    case "seq": {
      if (!Array.isArray(value)) throw new CodecError(`${where}: expected an array`);
      if (value.length > spec.maxItems)
        throw new CodecError(`${where}: ${value.length} items exceed the limit of ${spec.maxItems}`);
      if (depth + 1 > DEPTH_MAX) throw new CodecError(`${where}: nesting deeper than ${DEPTH_MAX}`);
      value.forEach((item: unknown, i) => check(spec.item, item, `${where}[${i}]`, depth + 1));
      return;
    }
  }
}

function checkStruct(s: AnySchema, value: unknown, where: string, depth: number): void {
  if (depth > DEPTH_MAX) throw new CodecError(`${where}: nesting deeper than ${DEPTH_MAX}`);
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array)
    throw new CodecError(`${where}: expected a map`);
  const record = value as Record<string, unknown>;
  const names = s.fields.map(([name]) => name);
  const unknownFields = Object.keys(record).filter((k) => !names.includes(k));
  const missing = names.filter((n) => !(n in record));
  if (unknownFields.length > 0 || missing.length > 0)
    throw new CodecError(`${where}: unknown fields [${unknownFields}], missing fields [${missing}]`);
  for (const [name, spec] of s.fields) check(spec, record[name], `${where}.${name}`, depth);
}

// --- encoding -------------------------------------------------------------------------------------

class Writer {
  private buffer = new Uint8Array(256);
  private length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  byte(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }

  /** `value` big-endian in `size` bytes. */
  uint(value: bigint, size: number): void {
    this.reserve(size);
    for (let i = size - 1; i >= 0; i--) {
      this.buffer[this.length + i] = Number(value & 0xffn);
      value >>= 8n;
    }
    this.length += size;
  }

  raw(data: Uint8Array): void {
    this.reserve(data.length);
    this.buffer.set(data, this.length);
    this.length += data.length;
  }

  result(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

/**
 * The header of a msgpack string, binary, array or map of `n` items or bytes: the family's fix
 * form when there is one and `n` fits it, else the shortest of its 8-bit (strings and binaries
 * only), 16-bit and 32-bit forms, as Python's msgpack writes them.
 */
interface Family {
  readonly fix?: { readonly code: number; readonly below: number };
  readonly len8?: number;
  readonly len16: number;
  readonly len32: number;
}
const STR: Family = { fix: { code: 0xa0, below: 32 }, len8: 0xd9, len16: 0xda, len32: 0xdb };
const BIN: Family = { len8: 0xc4, len16: 0xc5, len32: 0xc6 };
const ARRAY: Family = { fix: { code: 0x90, below: 16 }, len16: 0xdc, len32: 0xdd };
const MAP: Family = { fix: { code: 0x80, below: 16 }, len16: 0xde, len32: 0xdf };

function header(w: Writer, family: Family, n: number): void {
  if (family.fix !== undefined && n < family.fix.below) return w.byte(family.fix.code | n);
  if (family.len8 !== undefined && n <= 0xff) return (w.byte(family.len8), w.uint(BigInt(n), 1));
  if (n <= 0xffff) return (w.byte(family.len16), w.uint(BigInt(n), 2));
  if (n > 0xffffffff) throw new CodecError("a length beyond msgpack's 32 bits");
  return (w.byte(family.len32), w.uint(BigInt(n), 4));
}

function writeUInt(w: Writer, value: bigint): void {
  if (value < 0n || value > UINT_MAX) throw new CodecError(`${value} is not an unsigned 64-bit integer`);
  if (value <= 0x7fn) return w.byte(Number(value));
  if (value <= 0xffn) return (w.byte(0xcc), w.uint(value, 1));
  if (value <= 0xffffn) return (w.byte(0xcd), w.uint(value, 2));
  if (value <= 0xffffffffn) return (w.byte(0xce), w.uint(value, 4));
  return (w.byte(0xcf), w.uint(value, 8));
}

function writeString(w: Writer, value: string): void {
  const data = utf8.encode(value);
  header(w, STR, data.length);
  w.raw(data);
}

function writeBin(w: Writer, data: Uint8Array): void {
  header(w, BIN, data.length);
  w.raw(data);
}

function writeValue(w: Writer, spec: Spec, value: unknown): void {
  switch (spec.kind) {
    case "uint":
      return writeUInt(w, value as bigint);
    case "bytes":
      return writeBin(w, value as Uint8Array);
    case "text":
    case "human":
      return writeString(w, value as string);
    case "struct":
      return writeStruct(w, spec.schema, value as Record<string, unknown>);
    case "seq": {
      const items = value as readonly unknown[];
      header(w, ARRAY, items.length);
      for (const item of items) writeValue(w, spec.item, item);
      return;
    }
  }
}

function writeStruct(w: Writer, s: AnySchema, value: Record<string, unknown>): void {
  header(w, MAP, s.fields.length);
  for (const [name, spec] of s.fields) {
    writeString(w, name);
    writeValue(w, spec, value[name]);
  }
}

/** The one canonical encoding of `value`; a value its schema refuses is a `CodecError`. */
export function encode<T>(s: Schema<T>, value: T): Uint8Array {
  checkStruct(s, value, s.name, 0);
  const w = new Writer();
  writeStruct(w, s, value as Record<string, unknown>);
  return w.result();
}

// --- decoding -------------------------------------------------------------------------------------

/** msgpack values the schema will refuse (nil, booleans, floats, negative integers). */
class Foreign {
  constructor(readonly what: string) {}
}
/** A decoded map: its keys in the order they came (the schema requires sorted order). */
class DecodedMap {
  constructor(readonly entries: readonly (readonly [string, unknown])[]) {}
}

/** Nesting beyond this cannot be a valid value (DEPTH_MAX levels of structs and sequences). */
const PARSE_DEPTH_MAX = 2 * DEPTH_MAX + 2;

class Reader {
  offset = 0;
  constructor(private readonly data: Uint8Array) {}

  private take(n: number): Uint8Array {
    if (n > this.data.length - this.offset) throw new CodecError("not valid msgpack: OutOfData");
    const out = this.data.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  private uint(size: number): bigint {
    let value = 0n;
    for (const byte of this.take(size)) value = (value << 8n) | BigInt(byte);
    return value;
  }

  private length(size: number): number {
    return Number(this.uint(size));
  }

  /** A declared count of items: each takes at least one byte, so more than remain is a lie. */
  private count(n: number): number {
    if (n > this.data.length - this.offset) throw new CodecError("not valid msgpack: OutOfData");
    return n;
  }

  value(depth: number): unknown {
    if (depth > PARSE_DEPTH_MAX) throw new CodecError("not valid msgpack: StackError");
    const code = this.take(1)[0] as number;
    if (code <= 0x7f) return BigInt(code);
    if (code >= 0xe0) return new Foreign("a negative integer");
    if ((code & 0xe0) === 0xa0) return this.string(code & 0x1f);
    if ((code & 0xf0) === 0x90) return this.array(code & 0x0f, depth);
    if ((code & 0xf0) === 0x80) return this.map(code & 0x0f, depth);
    switch (code) {
      case 0xc0:
        return new Foreign("nil");
      case 0xc2:
      case 0xc3:
        return new Foreign("a boolean");
      case 0xc4:
        return this.take(this.length(1)).slice();
      case 0xc5:
        return this.take(this.length(2)).slice();
      case 0xc6:
        return this.take(this.length(4)).slice();
      case 0xca:
        this.take(4);
        return new Foreign("a float");
      case 0xcb:
        this.take(8);
        return new Foreign("a float");
      case 0xcc:
        return this.uint(1);
      case 0xcd:
        return this.uint(2);
      case 0xce:
        return this.uint(4);
      case 0xcf:
        return this.uint(8);
      case 0xd0:
      case 0xd1:
      case 0xd2:
      case 0xd3: {
        // Signed forms: Python decodes them to int; a non-negative one then fails re-encoding.
        const size = 1 << (code - 0xd0);
        const unsigned = this.uint(size);
        const signBit = 1n << BigInt(8 * size - 1);
        return unsigned >= signBit ? new Foreign("a negative integer") : unsigned;
      }
      case 0xd9:
        return this.string(this.length(1));
      case 0xda:
        return this.string(this.length(2));
      case 0xdb:
        return this.string(this.length(4));
      case 0xdc:
        return this.array(this.length(2), depth);
      case 0xdd:
        return this.array(this.length(4), depth);
      case 0xde:
        return this.map(this.length(2), depth);
      case 0xdf:
        return this.map(this.length(4), depth);
      default: // 0xc1 (never used), 0xc7-0xc9 and 0xd4-0xd8: extension types
        throw new CodecError(code === 0xc1 ? "not valid msgpack: FormatError" : "msgpack extension types are not allowed");
    }
  }

  private string(n: number): string {
    try {
      return utf8Strict.decode(this.take(n));
    } catch (exc) {
      if (exc instanceof CodecError) throw exc;
      throw new CodecError("not valid msgpack: UnicodeDecodeError");
    }
  }

  private array(n: number, depth: number): unknown[] {
    const items: unknown[] = [];
    for (let i = this.count(n); i > 0; i--) items.push(this.value(depth + 1));
    return items;
  }

  private map(n: number, depth: number): DecodedMap {
    const entries: [string, unknown][] = [];
    for (let i = this.count(n); i > 0; i--) {
      const key = this.value(depth + 1);
      // Python's strict_map_key: keys are str or bytes; ours must be field names (str).
      if (typeof key !== "string") throw new CodecError("not valid msgpack: a map key that is not a string");
      entries.push([key, this.value(depth + 1)]);
    }
    return new DecodedMap(entries);
  }
}

function describe(raw: unknown): string {
  if (raw instanceof Foreign) return raw.what;
  if (raw instanceof DecodedMap) return "a map";
  if (raw instanceof Uint8Array) return "binary data";
  if (Array.isArray(raw)) return "an array";
  return typeof raw;
}

function fromRaw(spec: Spec, raw: unknown, where: string, depth: number): unknown {
  switch (spec.kind) {
    case "uint":
      if (typeof raw !== "bigint") throw new CodecError(`${where}: expected an integer, got ${describe(raw)}`);
      break;
    case "bytes":
      if (!(raw instanceof Uint8Array)) throw new CodecError(`${where}: expected binary data, got ${describe(raw)}`);
      break;
    case "text":
    case "human":
      if (typeof raw !== "string") throw new CodecError(`${where}: expected a string, got ${describe(raw)}`);
      break;
    case "struct":
      return structFromRaw(spec.schema, raw, where, depth + 1);
    case "seq": {
      if (!Array.isArray(raw)) throw new CodecError(`${where}: expected an array, got ${describe(raw)}`);
      if (raw.length > spec.maxItems)
        throw new CodecError(`${where}: ${raw.length} items exceed the limit of ${spec.maxItems}`);
      if (depth + 1 > DEPTH_MAX) throw new CodecError(`${where}: nesting deeper than ${DEPTH_MAX}`);
      return Object.freeze(raw.map((item: unknown, i) => fromRaw(spec.item, item, `${where}[${i}]`, depth + 1)));
    }
  }
  check(spec, raw, where, depth);
  return raw;
}

function structFromRaw(s: AnySchema, raw: unknown, where: string, depth: number): Record<string, unknown> {
  if (depth > DEPTH_MAX) throw new CodecError(`${where}: nesting deeper than ${DEPTH_MAX}`);
  if (!(raw instanceof DecodedMap)) throw new CodecError(`${where}: expected a map, got ${describe(raw)}`);
  const names = s.fields.map(([name]) => name);
  const keys = raw.entries.map(([key]) => key);
  if (keys.length !== names.length || keys.some((k, i) => k !== names[i])) {
    const unknownFields = keys.filter((k) => !names.includes(k));
    const missing = names.filter((n) => !keys.includes(n));
    if (unknownFields.length > 0 || missing.length > 0 || keys.length !== names.length)
      throw new CodecError(`${where}: unknown fields [${unknownFields}], missing fields [${missing}]`);
    throw new CodecError(`${where}: not the canonical encoding (fields out of order)`);
  }
  const out: Record<string, unknown> = {};
  s.fields.forEach(([name, spec], i) => {
    out[name] = fromRaw(spec, (raw.entries[i] as readonly [string, unknown])[1], `${where}.${name}`, depth);
  });
  return Object.freeze(out);
}

/** Decode the canonical encoding of a `s` value; anything else is a `CodecError`. */
export function decode<T>(s: Schema<T>, data: Uint8Array, maxBytes: number): T {
  if (!(data instanceof Uint8Array)) throw new CodecError("expected bytes");
  if (data.length > maxBytes) throw new CodecError(`${data.length} bytes exceed the limit of ${maxBytes}`);
  const reader = new Reader(data);
  const raw = reader.value(0);
  if (reader.offset !== data.length) throw new CodecError("not valid msgpack: ExtraData");
  const value = structFromRaw(s, raw, s.name, 0) as T;
  // Re-encoding is the check that rules out every other encoding of the same value.
  if (!equalBytes(encode(s, value), data)) throw new CodecError(`${s.name}: not the canonical encoding`);
  return value;
}

/**
 * A msgpack array of plain values, as Python's `encode_primitive` packs a list: strings as str,
 * bytes as bin, bigints as the shortest unsigned integer (e.g. a signed request's input, which is
 * a list, not a schema's map).
 */
export function encodeTuple(items: readonly (string | bigint | Uint8Array)[]): Uint8Array {
  const w = new Writer();
  header(w, ARRAY, items.length);
  for (const item of items) {
    if (typeof item === "string") writeString(w, item);
    else if (typeof item === "bigint") writeUInt(w, item);
    else writeBin(w, item);
  }
  return w.result();
}
