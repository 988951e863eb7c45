/**
 * Scale benchmark (issue #18): the garbage collector and the catalog over many blobs and repositories.
 *
 *   node dist/bench/scale.js [--fs 100000,300000,1000000] [--s3 10000/1000,100000/10000] [--tmp DIR]
 *                            [--only fs|s3] [--concurrency N]
 *   (npm run bench:scale -- <options>)
 *
 * Filesystem: for each N, seed N unreferenced blobs straight into a fresh storage tree (files dated a day back, past
 * the grace period), run `wharf garbage-collect` as its own process under /usr/bin/time, and print wall time, CPU,
 * peak RSS (the collector's maxrss) and the time per blob, so linearity reads off the last column.
 *
 * S3: one throw-away Ceph RGW (testing/s3-test-server.ts). For each B/R, seed R repositories (one tag `latest` each:
 * a manifest naming a config and a layer blob, with registry:2's links) plus one repository of R/10 tags, and B - 3R
 * unreferenced blobs, with parallel PutObject straight into registry:2's layout. Then, with Wharf and the collector
 * talking to the RGW through a counting HTTP proxy on loopback (requests counted by S3 operation), measure:
 * the catalog walked a page of 1,000 at a time, tags/list of a sample of repositories and of the many-tag repository,
 * and `wharf garbage-collect --grace 0s` (S3 cannot date objects back; the seeded objects are older than the run).
 * Every tree and the RGW are removed at the end.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import pLimit from 'p-limit';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { NODE_FLAGS, withMallocEnv } from '../server/node-flags.js';
import { CLI_PATH, freePort } from '../testing/harness.js';
import { startS3TestServer, type S3TestServer } from '../testing/s3-test-server.js';
import { OCI_MANIFEST } from './client.js';
import { seedUnreferencedBlobs } from './workloads.js';

const run = promisify(execFile);

interface Args {
  fs: number[];
  s3: Array<{ blobs: number; repos: number }>;
  tmp: string;
  only?: 'fs' | 's3';
  concurrency: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    fs: [100_000, 300_000, 1_000_000],
    s3: [{ blobs: 10_000, repos: 1_000 }, { blobs: 100_000, repos: 10_000 }],
    tmp: tmpdir(),
    concurrency: 64,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    switch (a) {
      case '--fs': args.fs = v().split(',').filter(Boolean).map(Number); break;
      case '--s3': args.s3 = v().split(',').filter(Boolean).map((p) => {
        const [b, r] = p.split('/').map(Number);
        if (!b || !r || b < 3 * r) throw new Error(`--s3 ${p}: want BLOBS/REPOS with BLOBS >= 3 * REPOS`);
        return { blobs: b, repos: r };
      }); break;
      case '--tmp': args.tmp = v(); break;
      case '--only': {
        const o = v();
        if (o !== 'fs' && o !== 's3') throw new Error('--only fs|s3');
        args.only = o;
        break;
      }
      case '--concurrency': args.concurrency = Number(v()); break;
      case '--help': case '-h':
        console.log('usage: node dist/bench/scale.js [--fs N,N,...] [--s3 BLOBS/REPOS,...] [--tmp DIR] [--only fs|s3] [--concurrency N]');
        process.exit(0);
      // eslint-disable-next-line no-fallthrough
      default: throw new Error(`unknown option ${a}`);
    }
  }
  return args;
}

const hexOf = (content: string | Buffer) => createHash('sha256').update(content).digest('hex');
const fmt = (n: number, digits = 1) => n.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits });

interface Timed {
  wall: number;
  user: number;
  sys: number;
  maxRssMb: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI under GNU time: wall, CPU and the collector's own peak RSS (maxrss of the waited child). */
async function timedCli(args: string[], env: NodeJS.ProcessEnv = withMallocEnv()): Promise<Timed> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-scale-time-'));
  const out = join(dir, 'time');
  try {
    const started = process.hrtime.bigint();
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
      const child = spawn('/usr/bin/time', ['-o', out, '-f', '%U %S %M', process.execPath, ...NODE_FLAGS, CLI_PATH, ...args], { env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', fail);
      child.on('exit', (code) => done({ code, stdout, stderr }));
    });
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    if (r.code !== 0) throw new Error(`wharf ${args[0]} exited ${r.code}: ${(r.stderr || r.stdout).slice(-600)}`);
    const [user, sys, rssKb] = (await readFile(out, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
    return { wall, user: user!, sys: sys!, maxRssMb: rssKb! / 1024, stdout: r.stdout, stderr: r.stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- filesystem

async function gcFilesystem(args: Args): Promise<void> {
  console.log(`\n## GC on the filesystem (${args.tmp})\n`);
  console.log('| blobs | seed s | gc wall s | gc user+sys s | peak RSS MB | us wall/blob | us CPU/blob | deleted |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const n of args.fs) {
    const dir = await mkdtemp(join(args.tmp, 'wharf-scale-fs-'));
    try {
      const root = join(dir, 'data');
      const configPath = join(dir, 'config.yml');
      await writeFile(configPath, stringify({
        version: '0.1', log: { level: 'warn' },
        storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
        http: { addr: '127.0.0.1:0' },
      }));
      const seedStart = process.hrtime.bigint();
      await seedUnreferencedBlobs(root, n, 'scale', args.concurrency);
      const seed = Number(process.hrtime.bigint() - seedStart) / 1e9;
      const t = await timedCli(['garbage-collect', configPath]);
      const deleted = /finished in [\d.]+s: (\d+) blobs/.exec(t.stdout + t.stderr);
      const summary = (t.stdout || t.stderr).trim().split('\n').filter(Boolean).at(-1) ?? '';
      console.log(`| ${n.toLocaleString('en')} | ${fmt(seed)} | ${fmt(t.wall)} | ${fmt(t.user + t.sys)} | ${fmt(t.maxRssMb)} | `
        + `${fmt((t.wall * 1e6) / n)} | ${fmt(((t.user + t.sys) * 1e6) / n)} | ${deleted?.[1] ?? '?'} |`);
      console.error(`  (${n}: ${summary.slice(0, 300)})`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------- S3

/** S3 operation of one request, from its method, query and headers. */
function operation(method: string, url: string, headers: Record<string, string | string[] | undefined>): string {
  const q = new URL(url, 'http://x').searchParams;
  if (method === 'GET' && q.has('list-type')) return 'ListObjectsV2';
  if (method === 'GET' && q.has('uploads')) return 'ListMultipartUploads';
  if (method === 'GET') return 'GetObject';
  if (method === 'HEAD') return 'HeadObject';
  if (method === 'PUT' && headers['x-amz-copy-source']) return q.has('partNumber') ? 'UploadPartCopy' : 'CopyObject';
  if (method === 'PUT') return q.has('partNumber') ? 'UploadPart' : 'PutObject';
  if (method === 'POST' && q.has('delete')) return 'DeleteObjects';
  if (method === 'POST' && q.has('uploads')) return 'CreateMultipartUpload';
  if (method === 'POST') return 'CompleteMultipartUpload';
  if (method === 'DELETE') return q.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
  return method;
}

/** A loopback HTTP proxy in front of the RGW that counts requests by S3 operation (the Host header is kept). */
async function countingProxy(target: string): Promise<{ url: string; counts: Map<string, number>; close(): Promise<void> }> {
  const to = new URL(target);
  const counts = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const op = operation(req.method ?? '', req.url ?? '/', req.headers);
    counts.set(op, (counts.get(op) ?? 0) + 1);
    const up = httpRequest({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.keepAliveTimeout = 60_000;
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}`,
    counts,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

const countsText = (c: Map<string, number>) => [...c].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toLocaleString('en')}`).join(', ');
const total = (c: Map<string, number>) => [...c.values()].reduce((a, b) => a + b, 0);


/** Seed registry:2's layout under `root` with parallel PutObject. Returns the number of objects written. */
async function seedS3(client: S3Client, bucket: string, root: string, blobs: number, repos: number, concurrency: number): Promise<{ objects: number; manyTags: number }> {
  const v2 = `${root}/docker/registry/v2`;
  const limit = pLimit(concurrency);
  let objects = 0;
  const put = (key: string, body: string | Buffer) => limit(async () => {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    objects++;
  });
  const blobKey = (hex: string) => `${v2}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
  const link = (hex: string) => `sha256:${hex}`;
  const manyTags = Math.max(1, Math.floor(repos / 10));
  const jobs: Promise<void>[] = [];
  const flush = async () => {
    await Promise.all(jobs);
    jobs.length = 0;
  };
  for (let r = 0; r < repos; r++) {
    const name = `scale/repo-${String(r).padStart(6, '0')}`;
    const config = Buffer.from(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":${r}}`);
    const layer = Buffer.from(`layer-${r}`);
    const ch = hexOf(config);
    const lh = hexOf(layer);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: link(ch), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: link(lh), size: layer.length }],
    }));
    const mh = hexOf(manifest);
    const repo = `${v2}/repositories/${name}`;
    jobs.push(
      put(blobKey(ch), config), put(blobKey(lh), layer), put(blobKey(mh), manifest),
      put(`${repo}/_layers/sha256/${ch}/link`, link(ch)), put(`${repo}/_layers/sha256/${lh}/link`, link(lh)),
      put(`${repo}/_manifests/revisions/sha256/${mh}/link`, link(mh)),
      put(`${repo}/_manifests/tags/latest/current/link`, link(mh)),
      put(`${repo}/_manifests/tags/latest/index/sha256/${mh}/link`, link(mh)),
    );
    if (r === 0) {
      // One repository of many tags, all naming repository 0's manifest.
      const many = `${v2}/repositories/scale/many-tags`;
      jobs.push(put(`${many}/_manifests/revisions/sha256/${mh}/link`, link(mh)));
      for (let t = 0; t < manyTags; t++) {
        const tag = `t${String(t).padStart(6, '0')}`;
        jobs.push(put(`${many}/_manifests/tags/${tag}/current/link`, link(mh)), put(`${many}/_manifests/tags/${tag}/index/sha256/${mh}/link`, link(mh)));
      }
    }
    if (jobs.length >= 4096) await flush();
  }
  for (let i = 0; i < blobs - 3 * repos; i++) {
    const content = `unreferenced-${i}`;
    jobs.push(put(blobKey(hexOf(content)), content));
    if (jobs.length >= 4096) await flush();
  }
  await flush();
  return { objects, manyTags };
}

async function startWharf(configPath: string, logPath: string, port: number): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const log = openSync(logPath, 'a');
  const env = withMallocEnv();
  delete env.AWS_CA_BUNDLE;
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI_PATH, 'serve', configPath], { stdio: ['ignore', log, log], env });
  closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((done) => {
      child.once('exit', () => done());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wharf exited ${child.exitCode}: ${(await readFile(logPath, 'utf8')).slice(-600)}`);
    if (await fetch(`${url}/v2/`).then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error('wharf did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, pid: child.pid!, stop };
}

async function gcS3(args: Args): Promise<void> {
  console.log('\n## Catalog, tags and GC on S3 (Ceph RGW)\n');
  let s3: S3TestServer | undefined;
  const rows: string[] = [];
  try {
    s3 = await startS3TestServer({ memoryBytes: 2 * 1024 ** 3 });
    const client = s3.client();
    for (const { blobs, repos } of args.s3) {
      const root = `scale-${randomUUID().slice(0, 8)}`;
      const dir = await mkdtemp(join(args.tmp, 'wharf-scale-s3-'));
      const proxy = await countingProxy(s3.endpoint);
      let wharf: Awaited<ReturnType<typeof startWharf>> | undefined;
      try {
        const seedStart = process.hrtime.bigint();
        const seeded = await seedS3(client, s3.bucket, root, blobs, repos, args.concurrency);
        const seed = Number(process.hrtime.bigint() - seedStart) / 1e9;
        console.error(`  seeded ${seeded.objects.toLocaleString('en')} objects in ${fmt(seed)} s`);
        const port = await freePort();
        const configPath = join(dir, 'config.yml');
        await writeFile(configPath, stringify({
          version: '0.1', log: { level: 'warn', accesslog: { disabled: true } },
          storage: { s3: s3.storageConfig({ rootdirectory: `/${root}`, regionendpoint: proxy.url }), delete: { enabled: true }, redirect: { disable: true } },
          http: { addr: `127.0.0.1:${port}` },
        }));
        wharf = await startWharf(configPath, join(dir, 'server.log'), port);

        // Catalog: every page of 1,000.
        proxy.counts.clear();
        let started = process.hrtime.bigint();
        let next: string | undefined = `${wharf.url}/v2/_catalog?n=1000`;
        let names = 0;
        let pages = 0;
        while (next) {
          const res: Response = await fetch(next);
          if (!res.ok) throw new Error(`catalog: ${res.status}`);
          names += ((await res.json()) as { repositories: string[] }).repositories.length;
          pages++;
          const m = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
          next = m ? new URL(m[1]!, wharf.url).toString() : undefined;
        }
        const catalog = Number(process.hrtime.bigint() - started) / 1e9;
        const catalogReqs = new Map(proxy.counts);

        // Tags: 200 single-tag repositories one after another, then the many-tag one.
        proxy.counts.clear();
        const sample = Math.min(200, repos);
        started = process.hrtime.bigint();
        for (let i = 0; i < sample; i++) {
          const name = `scale/repo-${String(Math.floor((i * repos) / sample)).padStart(6, '0')}`;
          const res = await fetch(`${wharf.url}/v2/${name}/tags/list`);
          if (!res.ok) throw new Error(`tags ${name}: ${res.status}`);
          await res.arrayBuffer();
        }
        const tagsEach = Number(process.hrtime.bigint() - started) / 1e9 / sample;
        const tagsReqs = total(proxy.counts) / sample;
        proxy.counts.clear();
        started = process.hrtime.bigint();
        let many = 0;
        next = `${wharf.url}/v2/scale/many-tags/tags/list`;
        while (next) {
          const res: Response = await fetch(next);
          if (!res.ok) throw new Error(`many tags: ${res.status}`);
          many += ((await res.json()) as { tags: string[] }).tags.length;
          const m = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
          next = m ? new URL(m[1]!, wharf.url).toString() : undefined;
        }
        const manyTime = Number(process.hrtime.bigint() - started) / 1e9;
        const manyReqs = new Map(proxy.counts);
        await wharf.stop();
        wharf = undefined;

        // GC.
        proxy.counts.clear();
        const env = withMallocEnv();
        delete env.AWS_CA_BUNDLE;
        const t = await timedCli(['garbage-collect', configPath, '--grace', '0s'], env);
        const gcReqs = new Map(proxy.counts);
        const unreferenced = blobs - 3 * repos;
        const summary = (t.stdout || t.stderr).trim().split('\n').filter(Boolean).at(-1) ?? '';
        console.error(`  gc: ${summary.slice(0, 300)}`);
        rows.push(`| ${blobs.toLocaleString('en')} / ${repos.toLocaleString('en')} | ${names.toLocaleString('en')} in ${pages} pages: ${fmt(catalog, 2)} s, `
          + `${total(catalogReqs).toLocaleString('en')} req (${countsText(catalogReqs)}) | ${fmt(tagsEach * 1000)} ms, ${fmt(tagsReqs)} req each; `
          + `${many} tags: ${fmt(manyTime, 2)} s, ${total(manyReqs)} req | ${fmt(t.wall)} s wall, ${fmt(t.user + t.sys)} s CPU, ${fmt(t.maxRssMb)} MB | `
          + `${total(gcReqs).toLocaleString('en')} (${countsText(gcReqs)}) | ${fmt(total(gcReqs) / unreferenced, 2)} |`);
      } finally {
        await wharf?.stop();
        await proxy.close();
        await rm(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await s3?.stop();
  }
  console.log('| blobs / repositories | catalog walk | tags/list | gc | gc S3 requests | requests per unreferenced blob |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await run('test', ['-x', '/usr/bin/time']).catch(() => {
    throw new Error('/usr/bin/time (GNU time) is needed to read the collector\'s peak RSS');
  });
  if (args.only !== 's3') await gcFilesystem(args);
  if (args.only !== 'fs') await gcS3(args);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
