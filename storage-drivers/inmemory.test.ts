/** The in-memory driver against the shared behaviour suite. */
import { InMemoryDriver } from './inmemory.js';
import { driverSuite } from '../testing/storage-suite.js';

driverSuite('inmemory', async () => ({ driver: new InMemoryDriver(), cleanup: async () => {} }));
