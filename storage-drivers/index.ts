/**
 * Entry point of the storage drivers: build a driver from its options, always wrapped by `checkedDriver` so
 * callers get validated paths and normalised errors whichever backend is configured.
 */
import { checkedDriver } from './checked.js';
import type { StorageDriver } from './driver.js';
import { FilesystemDriver } from './filesystem.js';
import { InMemoryDriver } from './inmemory.js';
import { S3Driver, type S3DriverOptions } from './s3.js';

export * from './driver.js';
export { checkedDriver } from './checked.js';
export { FilesystemDriver } from './filesystem.js';
export { InMemoryDriver } from './inmemory.js';
export { S3Driver, type S3DriverOptions } from './s3.js';

export type DriverOptions =
  | { driver: 'filesystem'; rootDirectory: string; fsync?: boolean }
  | { driver: 'inmemory' }
  | ({ driver: 's3' } & S3DriverOptions);

/** A ready-to-use (checked) driver for `options`. */
export function createDriver(options: DriverOptions): StorageDriver {
  switch (options.driver) {
    case 'filesystem':
      return checkedDriver(new FilesystemDriver({ rootDirectory: options.rootDirectory, fsync: options.fsync }));
    case 'inmemory':
      return checkedDriver(new InMemoryDriver());
    case 's3':
      return checkedDriver(new S3Driver(options));
    default: {
      const unknown: never = options;
      throw new Error(`unknown storage driver: ${(unknown as { driver: string }).driver}`);
    }
  }
}

/**
 * Check that the backend of `options` is usable before serving: for S3, that the bucket exists and the credentials
 * may list it. Throws a StorageDriverError saying what is wrong. Local drivers need no check.
 */
export async function verifyDriver(options: DriverOptions): Promise<string[]> {
  if (options.driver !== 's3') return [];
  const driver = new S3Driver(options);
  try {
    return await driver.verify();
  } finally {
    driver.destroy();
  }
}
