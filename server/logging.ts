/**
 * Logging: pino, one line per event. `log.formatter: json` writes JSON objects; `text` writes logfmt-style lines
 * for people (`time=… level=info msg="listening" url=http://…`), like registry:2's text format. Without a formatter
 * in the config, text on a terminal and JSON everywhere else (files, pipes, log collectors).
 * Credentials never reach a log line: the fields that could carry them are redacted.
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { WharfConfig } from './config/index.js';

/** A logfmt value: bare when it has no space, quote or equals sign, else JSON-quoted. */
function logfmtValue(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** Turn one pino JSON line into a logfmt line. */
export function toLogfmt(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { time, level, msg, ...rest } = record;
  const parts = [`time=${logfmtValue(time)}`, `level=${logfmtValue(level)}`, `msg=${logfmtValue(msg ?? '')}`];
  for (const [key, value] of Object.entries(rest)) {
    if (value !== undefined) parts.push(`${key}=${logfmtValue(value)}`);
  }
  return `${parts.join(' ')}\n`;
}

function textDestination(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      const lines = chunk.toString('utf8').split('\n').filter((l) => l !== '');
      out.write(lines.map(toLogfmt).join(''));
      done();
    },
  });
}

/** Lines waiting past this many characters are written at once, without waiting for the end of the turn. */
const BATCH_CHARS = 64 * 1024;
/** The batches of every logger of the process, written out when it exits (one listener, added with the first). */
const batches = new Set<() => void>();

/**
 * A destination that writes the lines logged in one turn of the event loop with one write, at the end of the turn:
 * under load, one system call for the access-log lines of many requests instead of one each (4% of a manifest GET's
 * CPU, measured). The lines of a process that exits are written as it exits (`exit` runs for process.exit() and for
 * an uncaught exception); only a process killed outright (SIGKILL) loses those of its last turn.
 */
function batchedDestination(out: NodeJS.WritableStream): { write(line: string): boolean } {
  let pending: string[] = [];
  let chars = 0;
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.length === 1 ? pending[0]! : pending.join('');
    pending = [];
    chars = 0;
    out.write(text);
  };
  if (batches.size === 0) {
    process.on('exit', () => {
      for (const batch of batches) batch();
    });
  }
  batches.add(flush);
  return {
    write(line: string): boolean {
      pending.push(line);
      chars += line.length;
      if (chars >= BATCH_CHARS) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
      return true;
    },
  };
}

export function createLogger(config: WharfConfig, out: NodeJS.WritableStream = process.stdout): Logger {
  const options = {
    level: config.log.level,
    base: { service: 'wharf', ...config.log.fields },
    formatters: { level: (label: string) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['authorization', 'password', 'token', 'headers.authorization', 'headers.cookie', 'req.headers.authorization'],
      censor: '[redacted]',
    },
  };
  const text = config.log.formatter === 'text' ||
    (config.log.formatter === 'auto' && Boolean((out as NodeJS.WriteStream).isTTY));
  return pino(options, batchedDestination(text ? textDestination(out) : out));
}
