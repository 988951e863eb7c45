/**
 * Entry point of the storage drivers: build a driver from its options, always wrapped by `checkedDriver` so
 * callers get validated paths and normalised errors whichever backend is configured.
 */
import { checkedDriver } from './checked.js';
import type { StorageDriver } from './driver.js';
import { FilesystemDriver } from './filesystem.js';
import { InMemoryDriver } from './inmemory.js';

export * from './driver.js';
export { checkedDriver } from './checked.js';
export { FilesystemDriver } from './filesystem.js';
export { InMemoryDriver } from './inmemory.js';

export type DriverOptions =
  | { driver: 'filesystem'; rootDirectory: string; fsync?: boolean }
  | { driver: 'inmemory' };

/** A ready-to-use (checked) driver for `options`. */
export function createDriver(options: DriverOptions): StorageDriver {
  switch (options.driver) {
    case 'filesystem':
      return checkedDriver(new FilesystemDriver({ rootDirectory: options.rootDirectory, fsync: options.fsync }));
    case 'inmemory':
      return checkedDriver(new InMemoryDriver());
    default: {
      const unknown: never = options;
      throw new Error(`unknown storage driver: ${(unknown as { driver: string }).driver}`);
    }
  }
}
