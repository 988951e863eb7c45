/**
 * A real S3 for tests: a throw-away single-node Ceph cluster (one monitor, one OSD on memstore, one RADOS Gateway)
 * in a temporary directory, listening on loopback only. RGW is a production S3 implementation: it checks
 * signatures and implements multipart uploads, UploadPartCopy, aborts, ListParts, ListObjectsV2 paging and
 * presigned URLs, so tests against it mean something for AWS too.
 *
 * Needs the Debian packages ceph-mon, ceph-osd and radosgw (scripts/test-deps.sh installs them). No daemon is
 * started by the packages and nothing under /etc/ceph is read: every path is inside the temporary directory and the
 * CLI tools are pointed at its ceph.conf through CEPH_CONF / CEPH_ARGS.
 *
 *   const s3 = await startS3TestServer();          // about 2-3 s
 *   ... s3.endpoint, s3.accessKey, s3.secretKey, s3.bucket (created, empty), s3.client() ...
 *   await s3.stop();                               // kills the three daemons by PID, removes the directory
 *
 * One cluster per test file is the intended use. Data lives in RAM (memstore): size `memoryBytes` for the test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from './harness.js';
import type { S3DriverOptions } from '../storage-drivers/s3.js';

const run = promisify(execFile);

export interface S3TestServer {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  /** A bucket created for the caller (empty). */
  bucket: string;
  /** An SDK client for the server, set up as the RGW needs (path style, checksums only when required). */
  client(): S3Client;
  /** A Wharf `storage.s3` section (registry:2 keys) pointing at this server's bucket, with `extra` keys on top. */
  storageConfig(extra?: Record<string, unknown>): Record<string, unknown>;
  /** S3Driver options for this server's bucket, with `extra` on top. */
  driverOptions(extra?: Partial<S3DriverOptions>): S3DriverOptions;
  /** Create another (empty) bucket. */
  createBucket(name: string): Promise<void>;
  /** The daemons' logs so far (for failure messages). */
  logs(): Promise<string>;
  /** Stop the daemons (by PID) and remove the cluster directory. Idempotent. */
  stop(): Promise<void>;
}

export interface S3TestServerOptions {
  /** memstore capacity: the most object data the cluster holds (RAM used only as filled). Default 1 GiB. */
  memoryBytes?: number;
  bucket?: string;
}

/** Daemons still running in this process, killed if the process exits without stopping them. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `probe` until it returns true; fail with `what` and the logs after `timeoutMs`. */
async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  logs: () => Promise<string>,
  daemons: ChildProcess[],
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A daemon that exited (a port taken meanwhile, say) will not come up: fail now, so the start can be retried.
    const dead = daemons.find((d) => d.exitCode !== null || d.signalCode !== null);
    if (dead) throw new Error(`s3 test server: ${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode}) while waiting for ${what}\n${await logs()}`);
    try {
      if (await probe()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw new Error(`s3 test server: ${what} did not happen within ${timeoutMs / 1000} s\n${await logs()}`);
    await sleep(50);
  }
}

const BINARIES = ['ceph-authtool', 'monmaptool', 'ceph-mon', 'ceph-osd', 'ceph', 'radosgw', 'radosgw-admin'];

/**
 * Start a cluster. Ports are picked free just before the daemons bind them, so another process can take one in
 * between; a failed start is therefore retried (twice) on new ports before the error is reported.
 */
export async function startS3TestServer(options: S3TestServerOptions = {}): Promise<S3TestServer> {
  const missing: string[] = [];
  for (const bin of BINARIES) {
    try {
      await run('sh', ['-c', `command -v ${bin}`]);
    } catch {
      missing.push(bin);
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `s3 test server: ${missing.join(', ')} not found; install the Debian packages ceph-mon ceph-osd radosgw ` +
        '(apt-get install --no-install-recommends ceph-mon ceph-osd radosgw, or run scripts/test-deps.sh as root)',
    );
  }
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function startOnce(options: S3TestServerOptions): Promise<S3TestServer> {
  installExitHook();
  // Short base path: admin sockets must stay under 107 characters.
  const dir = await mkdtemp(join(tmpdir(), 'wharf-rgw-'));
  const daemons: ChildProcess[] = [];
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await Promise.all(
        daemons.map(
          (child) =>
            new Promise<void>((done) => {
              if (child.exitCode !== null || child.signalCode !== null) return done();
              child.once('exit', () => {
                live.delete(child);
                done();
              });
              child.ref(); // unref'd while running; the exit must keep this process alive until it arrives
              // Everything is thrown away, so there is nothing to shut down cleanly (SIGTERM takes seconds).
              child.kill('SIGKILL');
            }),
        ),
      );
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  const logs = async (): Promise<string> => {
    const out: string[] = [];
    for (const name of ['mon.a', 'osd.0', 'client.rgw.a']) {
      const text = await readFile(join(dir, 'log', `${name}.log`), 'utf8').catch(() => '');
      out.push(`--- ${name} (last lines) ---\n${text.trimEnd().split('\n').slice(-20).join('\n')}`);
    }
    return out.join('\n');
  };
  try {
    return await start(dir, daemons, options, stop, logs);
  } catch (err) {
    await stop();
    throw err;
  }
}

async function start(
  dir: string,
  daemons: ChildProcess[],
  options: S3TestServerOptions,
  stop: () => Promise<void>,
  logs: () => Promise<string>,
): Promise<S3TestServer> {
  const conf = join(dir, 'ceph.conf');
  const env = { ...process.env, CEPH_CONF: conf, CEPH_ARGS: `--conf ${conf}` };
  const ceph = (args: string[], timeout = 30_000) => run('ceph', args, { env, timeout });
  const [monV2, monV1, rgwPort, osdBase] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  // The OSD binds several ports (public, cluster, heartbeats; v1 and v2) from this range.
  const osdMin = Math.min(osdBase, 65_000);
  const fsid = randomUUID();
  for (const sub of ['run', 'log', 'mon', 'osd/ceph-0', 'rgw']) await mkdir(join(dir, sub), { recursive: true });
  const memoryBytes = options.memoryBytes ?? 1024 ** 3;

  await writeFile(
    conf,
    `[global]
fsid = ${fsid}
mon_host = [v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_port_min = ${osdMin}
ms_bind_port_max = ${osdMin + 40}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = ${dir}/run
log_file = ${dir}/log/$name.log
pid_file = ${dir}/run/$name.pid
admin_socket = ${dir}/run/$name.asok
crash_dir = ${dir}/crash
exporter_sock_dir = ${dir}/run
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
debug_ms = 0

[mon]
mon_data = ${dir}/mon/$cluster-$id
keyring = ${dir}/mon.keyring
paxos_propose_interval = 0.01
paxos_min_wait = 0.01
mon_osd_auto_mark_in = true

[osd]
osd_data = ${dir}/osd/$cluster-$id
keyring = ${dir}/osd/$cluster-$id/keyring
osd_objectstore = memstore
memstore_device_bytes = ${memoryBytes}
osd_min_pg_log_entries = 100
osd_max_pg_log_entries = 500

[client.admin]
keyring = ${dir}/admin.keyring

[client.rgw.a]
keyring = ${dir}/rgw.keyring
rgw_data = ${dir}/rgw
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw_enable_lc_threads = false
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
rgw_dns_name = 127.0.0.1
`,
  );

  const daemon = (command: string, args: string[]): ChildProcess => {
    // A process group of its own, so a terminal's signals do not reach it; `pid` is the daemon itself.
    const child = spawn(command, ['-f', ...args], { env, stdio: 'ignore', detached: true });
    child.unref();
    child.on('error', () => {}); // reported through the readiness wait
    daemons.push(child);
    live.add(child);
    return child;
  };

  // Monitor.
  const monKeyring = join(dir, 'mon.keyring');
  const adminKeyring = join(dir, 'admin.keyring');
  await run('ceph-authtool', ['--create-keyring', monKeyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
  await run('ceph-authtool', [
    '--create-keyring', adminKeyring, '--gen-key', '-n', 'client.admin',
    '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *',
  ]);
  await run('ceph-authtool', [monKeyring, '--import-keyring', adminKeyring]);
  const monmap = join(dir, 'monmap');
  await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`, '--fsid', fsid, monmap]);
  await run('ceph-mon', ['--conf', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', monKeyring]);
  daemon('ceph-mon', ['--conf', conf, '-i', 'a']);
  await waitUntil('the monitor answering', async () => (await ceph(['mon', 'stat'], 5_000)).stdout.includes('quorum'), logs, daemons);

  // One OSD on memstore.
  const osdUuid = randomUUID();
  const osdSecret = (await run('ceph-authtool', ['--gen-print-key'])).stdout.trim();
  const osdJson = join(dir, 'osd.json');
  await writeFile(osdJson, JSON.stringify({ cephx_secret: osdSecret }));
  const osdId = (await ceph(['osd', 'new', osdUuid, '-i', osdJson])).stdout.trim();
  if (osdId !== '0') throw new Error(`s3 test server: expected osd id 0, got ${JSON.stringify(osdId)}`);
  await run('ceph-osd', ['--conf', conf, '-i', '0', '--mkfs', '--key', osdSecret, '--osd-uuid', osdUuid], { env });
  await writeFile(join(dir, 'osd', 'ceph-0', 'keyring'), `[osd.0]\n\tkey = ${osdSecret}\n`);
  daemon('ceph-osd', ['--conf', conf, '-i', '0']);
  await waitUntil('osd.0 coming up', async () => /^osd\.0 up/m.test((await ceph(['osd', 'dump'], 5_000)).stdout), logs, daemons);

  // The gateway.
  await ceph(['auth', 'get-or-create', 'client.rgw.a', 'mon', 'allow rw', 'osd', 'allow rwx', '-o', join(dir, 'rgw.keyring')]);
  daemon('radosgw', ['--conf', conf, '-n', 'client.rgw.a']);
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  await waitUntil('radosgw answering GET /', async () => {
    const res = await fetch(`${endpoint}/`);
    await res.arrayBuffer();
    return res.status === 200;
  }, logs, daemons);

  const accessKey = `WHARF${randomBytes(8).toString('hex').toUpperCase()}`;
  const secretKey = randomBytes(24).toString('base64url');
  await run('radosgw-admin', ['--conf', conf, '-n', 'client.admin', 'user', 'create', '--uid=test', '--display-name=test',
    `--access-key=${accessKey}`, `--secret=${secretKey}`], { env, timeout: 30_000 });

  const region = 'us-east-1';
  const client = () =>
    new S3Client({
      endpoint,
      region,
      forcePathStyle: true,
      credentials: { accessKeyId: accessKey, secretAccessKey: secretKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  const createBucket = async (name: string) => {
    const c = client();
    try {
      await c.send(new CreateBucketCommand({ Bucket: name }));
    } finally {
      c.destroy();
    }
  };
  const bucket = options.bucket ?? 'wharf-test';
  await createBucket(bucket);
  const storageConfig = (extra: Record<string, unknown> = {}) => ({
    region,
    bucket,
    regionendpoint: endpoint,
    forcepathstyle: true,
    accesskey: accessKey,
    secretkey: secretKey,
    ...extra,
  });
  const driverOptions = (extra: Partial<S3DriverOptions> = {}): S3DriverOptions => ({
    bucket,
    region,
    regionEndpoint: endpoint,
    forcePathStyle: true,
    accessKey,
    secretKey,
    ...extra,
  });
  return { endpoint, region, accessKey, secretKey, bucket, client, storageConfig, driverOptions, createBucket, logs, stop };
}
