/**
 * The page's one way to make elements: text goes in as text nodes (never parsed as HTML), so
 * record content, reasons and names from the ledger cannot inject markup; the CSP stays strict.
 */

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag: string, attrs: Record<string, string | number> = {}, ...children: (Node | string)[]): SVGElement {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child);
  return el as SVGElement;
}

export function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

/** Replace the children of `parent` with `children`. */
export function fill(parent: Element, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}

/** A date and time from the ledger (milliseconds), in the reader's locale and zone. */
export function formatTime(ms: bigint): string {
  if (ms >= 2n ** 53n) return "never";
  return new Date(Number(ms)).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function formatDay(ms: bigint): string {
  if (ms >= 2n ** 53n) return "no end";
  return new Date(Number(ms)).toLocaleDateString(undefined, { dateStyle: "medium" });
}

export function download(data: BlobPart, name: string, type: string): void {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([data], { type }));
  link.download = name;
  link.click();
  URL.revokeObjectURL(link.href);
}

/** "Verified: in block N, certified by the validators" — the mark on each fact shown. */
export function verifiedMark(height: bigint): HTMLElement {
  return h("span", { class: "verified", title: "Its transaction is in a block a quorum of the validators certified" }, `✓ verified, block ${height}`);
}
