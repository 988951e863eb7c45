/**
 * The one error the configuration loader throws.
 *
 * Each problem is a line of the form `<key path>: <what is wrong>` (for example
 * `storage.delete.enabled: expected a boolean, got "yes please"`), so an operator can find the key at once.
 * The loader reports every problem it finds in one go, not just the first: `problems` lists them and the
 * message joins them with newlines.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** Every problem found, each naming its key. */
  readonly problems: readonly string[];
  /** Where the configuration came from: a file path, or a description such as `<embedded default>`. */
  readonly source: string;

  constructor(problems: string | readonly string[], source: string) {
    const list = typeof problems === 'string' ? [problems] : [...problems];
    super(list.join('\n'));
    this.problems = list;
    this.source = source;
  }
}

/** A problem with one key, before it is written as a line: the key path, and the variable that set it, if any. */
export interface Problem {
  path: readonly string[];
  message: string;
  origin?: string;
}

export function formatProblem(p: Problem): string {
  return `${p.path.join('.')}${p.origin ? ` (from ${p.origin})` : ''}: ${p.message}`;
}
