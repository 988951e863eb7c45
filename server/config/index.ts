/** Wharf configuration: the types, the loader and its error. */
export type * from './schema.js';
export { ConfigError } from './errors.js';
export { loadConfig, parseConfig, EMBEDDED_DEFAULT_YAML, EMBEDDED_SOURCE } from './load.js';
export type { LoadOptions, LoadResult } from './load.js';
export { parseGoDuration } from './duration.js';
