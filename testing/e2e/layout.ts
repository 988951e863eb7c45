/**
 * Reading back what a client wrote, for comparison with what was generated: OCI layouts (`oci:` transport) and
 * `dir:` directories (skopeo's transport that stores the manifest byte for byte as `manifest.json`).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256 } from '../helpers.js';
import type { Blob } from './image.js';

/** The descriptor that `index.json` of the OCI layout at `dir` names with ref `tag`. */
export async function layoutRef(dir: string, tag: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`no ref ${tag} in ${dir}/index.json: ${JSON.stringify(index)}`);
  return entry;
}

/**
 * Reads blob `digest` from the OCI layout at `dir`, checking that the file's content really hashes to its name
 * (a client that wrote damaged bytes must not pass because the file name is right).
 */
export async function layoutBlob(dir: string, digest: string): Promise<Buffer> {
  const bytes = await readFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)));
  const actual = sha256(bytes);
  if (actual !== digest) throw new Error(`blob ${digest} in ${dir} hashes to ${actual}`);
  return bytes;
}

/** Reads blob `digest` from a skopeo `dir:` directory (one file per blob, named by hex), verifying its hash. */
export async function dirBlob(dir: string, digest: string): Promise<Buffer> {
  const bytes = await readFile(join(dir, digest.slice('sha256:'.length)));
  const actual = sha256(bytes);
  if (actual !== digest) throw new Error(`blob ${digest} in ${dir} hashes to ${actual}`);
  return bytes;
}

/** Throws unless every blob in `expected` is present in the OCI layout at `dir` with identical bytes. */
export async function assertLayoutHasBlobs(dir: string, expected: Blob[]): Promise<void> {
  for (const blob of expected) {
    const bytes = await layoutBlob(dir, blob.digest);
    if (!bytes.equals(blob.bytes)) throw new Error(`blob ${blob.digest} in ${dir} differs from the generated one`);
  }
}
