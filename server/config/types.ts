/** The types of a loaded configuration, derived from the schema (schema.ts); kept as a module for its importers. */
export type * from './schema.js';
