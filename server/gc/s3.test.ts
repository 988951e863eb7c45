/**
 * The collector's scenarios (./scenarios.ts) against a real S3: one throw-away Ceph RADOS Gateway for this file
 * (testing/s3-test-server.ts), a fresh root directory per test. S3 cannot set modification times back, so
 * ageing shifts the grace period instead.
 */
import test from 'ava';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { checkedDriver } from '../../storage-drivers/checked.js';
import { S3Driver } from '../../storage-drivers/s3.js';
import { startS3TestServer, type S3TestServer } from '../../testing/s3-test-server.js';
import { LocalRegistry } from '../registry/registry.js';
import { gcScenarios, type GcFixture } from '../../testing/gc-scenarios.js';
import { configFileFor, randomBlob } from '../../testing/gc-helpers.js';

let server: Promise<S3TestServer> | undefined;
const s3 = () => (server ??= startS3TestServer());
test.after.always(async () => {
  if (server) await (await server).stop();
});

async function s3Fixture(): Promise<GcFixture> {
  const srv = await s3();
  const root = `gc-${randomUUID()}`;
  const raw = new S3Driver(srv.driverOptions({ rootDirectory: `/${root}`, chunkSize: 5 * 1024 * 1024 }));
  const driver = checkedDriver(raw);
  const dir = await mkdtemp(join(tmpdir(), 'wharf-gc-s3-'));
  let skew = 0;
  const openUploads = async (path: string) => {
    const res = await raw.client.send(new ListMultipartUploadsCommand({ Bucket: srv.bucket, Prefix: raw.key(path) }));
    return (res.Uploads ?? []).length;
  };
  return {
    driver,
    registry: new LocalRegistry(driver),
    age: async (ms) => {
      skew += ms;
    },
    grace: (ms) => ms - skew,
    configFile: () => configFileFor({ s3: srv.storageConfig({ rootdirectory: `/${root}` }) }, join(dir, 'config.yml')),
    leaveMultipartUpload: async (path) => {
      // A writer that sent its first part and was never closed (its process died).
      const writer = await driver.writer(path, false);
      await writer.write(randomBlob(raw.chunkSize));
      await writer.write(randomBlob(1));
    },
    openMultipartUploads: openUploads,
    remove: async () => {
      await driver.delete('/').catch(() => {});
      raw.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

gcScenarios('s3', s3Fixture, { killGarbage: 400 });
