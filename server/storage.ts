/**
 * The storage driver a configuration names. Shared by the server (server/main.ts) and the garbage collector
 * (server/gc), which must not import the HTTP layer that main.ts assembles.
 */
import { createDriver, type DriverOptions } from '../storage-drivers/index.js';
import type { StorageDriver } from '../storage-drivers/driver.js';
import type { WharfConfig } from './config/index.js';

export function driverFor(config: WharfConfig): StorageDriver {
  return createDriver(driverOptionsFor(config));
}

/** The storage-drivers options for the configured driver. */
export function driverOptionsFor(config: WharfConfig): DriverOptions {
  const { storage } = config;
  if (storage.driver === 'inmemory') return { driver: 'inmemory' };
  if (storage.driver === 's3' && storage.s3) {
    const s3 = storage.s3;
    return {
      driver: 's3',
      bucket: s3.bucket,
      region: s3.region,
      regionEndpoint: s3.regionendpoint,
      forcePathStyle: s3.forcepathstyle,
      accessKey: s3.accesskey,
      secretKey: s3.secretkey,
      sessionToken: s3.sessiontoken,
      rootDirectory: s3.rootdirectory,
      chunkSize: s3.chunksize,
      multipartCopyChunkSize: s3.multipartcopychunksize,
      multipartCopyMaxConcurrency: s3.multipartcopymaxconcurrency,
      multipartCopyThresholdSize: s3.multipartcopythresholdsize,
      stallTimeoutMs: s3.stalltimeout,
      uploadBufferMemory: s3.uploadbuffermemory,
      secure: s3.secure,
      skipVerify: s3.skipverify,
      storageClass: s3.storageclass,
      encrypt: s3.encrypt,
      keyId: s3.keyid,
    };
  }
  return { driver: 'filesystem', rootDirectory: storage.filesystem.rootdirectory };
}
