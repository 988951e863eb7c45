/** Formatting of sizes, dates and platforms for people. */
import type { Platform } from './api.js';

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** An ISO time as `2026-12-06 16:20 UTC` (people across zones read the same). */
export function when(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${Math.round(seconds * 10) / 10} s`;
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return [d ? `${d} d` : '', h ? `${h} h` : '', `${m} min`].filter(Boolean).join(' ');
}

export function platform(p: Platform | null | undefined): string {
  if (!p) return 'unknown';
  const name = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
  return p['os.version'] ? `${name} (${p['os.version']})` : name;
}

export function shortDigest(digest: string): string {
  const at = digest.indexOf(':');
  return at < 0 ? digest.slice(0, 19) : `${digest.slice(0, at + 1)}${digest.slice(at + 1, at + 13)}`;
}
