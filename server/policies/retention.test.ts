/**
 * The retention decision as a pure function: each keep reason, the untagged closure over index children and
 * referrers, referrers-schema tags, and randomized scenarios checked against the rules' definition (every tag's
 * verdict, and no deleted manifest reachable from what stays).
 */
import test from 'ava';
import { parseConfig } from '../config/load.js';
import { PolicyRules, type RetentionRule } from './rules.js';
import { decideRetention, formatAge, referrersTagSubject, type ManifestState, type RetentionInput, type TagState } from './retention.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = 1_800_000_000_000;

function rules(policies: string, extra = ''): PolicyRules {
  const yaml = `version: 0.1\nstorage: inmemory\npolicies:\n${policies}\n${extra}`;
  return new PolicyRules(parseConfig(yaml, {}, 'x').config);
}

function ruleOf(keep: string, untagged = ''): RetentionRule {
  const r = rules(`  retention:\n    - repositories: ['ci/**']\n${keep}${untagged}`).retentionFor('ci/app');
  if (!r) throw new Error('no rule');
  return r;
}

const d = (n: number | string) => `sha256:${String(n).padStart(64, '0')}`;
const tag = (name: string, digest: string, ageMs: number): TagState => ({ tag: name, digest, pushedAt: NOW - ageMs });
const man = (digest: string, ageMs: number, extra: Partial<ManifestState> = {}): ManifestState => ({ digest, createdAt: NOW - ageMs, children: [], ...extra });

function input(rule: RetentionRule, over: Partial<RetentionInput>): RetentionInput {
  return { rule, now: NOW, tags: [], manifests: [], pulls: { tags: new Map(), digests: new Map() }, immutable: () => undefined, ...over };
}

test('keep.mostrecent keeps the newest tags; the others go with the reason', (t) => {
  const rule = ruleOf('      keep: {mostrecent: 2, pulledwithin: 720h}\n');
  const tags = [tag('a', d(1), 5 * DAY), tag('b', d(2), 1 * DAY), tag('c', d(3), 3 * DAY), tag('d', d(4), 2 * DAY)];
  const plan = decideRetention(input(rule, { tags, pulls: { tags: new Map([['a', NOW - 41 * DAY]]), digests: new Map() } }));
  t.deepEqual(plan.deleteTags.map((v) => v.tag).sort(), ['a', 'c']);
  t.is(plan.deleteTags.find((v) => v.tag === 'a')!.reason, 'not among the 2 most recently pushed; last pulled 41 days ago');
  t.is(plan.deleteTags.find((v) => v.tag === 'c')!.reason, 'not among the 2 most recently pushed; never pulled');
  t.is(plan.tags.find((v) => v.tag === 'b')!.reason, 'among the 2 most recently pushed');
  // Without untagged, no manifest goes.
  t.deepEqual(plan.deleteManifests, []);
});

test('a pull within pulledwithin keeps a tag, by tag or through the digest it names', (t) => {
  const rule = ruleOf('      keep: {pulledwithin: 24h}\n');
  const tags = [tag('bytag', d(1), 10 * DAY), tag('bydigest', d(2), 10 * DAY), tag('stale', d(3), 10 * DAY), tag('old', d(4), 10 * DAY)];
  const pulls = {
    tags: new Map([['bytag', NOW - HOUR], ['old', NOW - 2 * DAY]]),
    digests: new Map([[d(2), NOW - 2 * HOUR], [d(4), NOW - 3 * DAY]]),
  };
  const plan = decideRetention(input(rule, { tags, pulls }));
  t.deepEqual(plan.deleteTags.map((v) => v.tag).sort(), ['old', 'stale']);
  t.is(plan.deleteTags.find((v) => v.tag === 'old')!.reason, 'pushed 10 days ago; last pulled 2 days ago');
  t.is(plan.tags.find((v) => v.tag === 'bydigest')!.reason, 'pulled 2 hours ago');
});

test('keep.tags and immutable tags are always kept, whatever their age', (t) => {
  const rule = ruleOf("      keep: {mostrecent: 1, tags: ['latest', 'v*']}\n");
  const tags = [tag('latest', d(1), 9 * DAY), tag('v1', d(2), 9 * DAY), tag('rel-1', d(3), 9 * DAY), tag('x', d(4), 9 * DAY), tag('new', d(5), 0)];
  const plan = decideRetention(input(rule, { tags, immutable: (tg) => (tg === 'rel-1' ? 'policies.immutabletags[0] (ci/**; tags rel-*)' : undefined) }));
  t.deepEqual(plan.deleteTags.map((v) => v.tag), ['x']);
  t.is(plan.deleteTags[0]!.reason, 'not among the 1 most recently pushed; matches none of keep.tags');
  t.is(plan.tags.find((v) => v.tag === 'rel-1')!.reason, 'immutable (policies.immutabletags[0] (ci/**; tags rel-*))');
});

test('a rule without keep deletes no tag; untagged alone removes old untagged manifests only', (t) => {
  const rule = ruleOf('', '      untagged: {olderthan: 24h}\n');
  t.is(rule.keep, undefined);
  const plan = decideRetention(input(rule, {
    tags: [tag('a', d(1), 30 * DAY)],
    manifests: [man(d(1), 30 * DAY), man(d(2), 30 * DAY), man(d(3), HOUR)],
  }));
  t.deepEqual(plan.deleteTags, []);
  t.deepEqual(plan.deleteManifests.map((m) => m.digest), [d(2)]);
  t.regex(plan.deleteManifests[0]!.reason, /^untagged, pushed 30 days ago \(older than 1 day\)/);
});

test('the untagged closure keeps index children and referrers of kept manifests, transitively, and young roots', (t) => {
  const rule = ruleOf('      keep: {mostrecent: 1}\n', '      untagged: {olderthan: 24h}\n');
  const old = 10 * DAY;
  const manifests = [
    man(d('i'), old, { children: [d('c1'), d('c2')] }), // index named by the kept tag
    man(d('c1'), old), man(d('c2'), old),
    man(d('sig'), old, { subject: d('i') }), // referrer of the kept index
    man(d('sigsig'), old, { subject: d('sig') }), // referrer of that referrer
    man(d('gone'), old, { children: [d('gc')] }), // named by a deleted tag
    man(d('gc'), old),
    man(d('gonesig'), old, { subject: d('gone') }),
    man(d('young'), HOUR, { children: [d('yc')] }), // young untagged index: kept with its old child
    man(d('yc'), old),
    man(d('shared'), old), // child of both a deleted and a kept index
  ];
  manifests[0]!.children = [d('c1'), d('c2'), d('shared')];
  manifests[5]!.children = [d('gc'), d('shared')];
  const plan = decideRetention(input(rule, { tags: [tag('new', d('i'), DAY), tag('old', d('gone'), 2 * DAY)], manifests }));
  t.deepEqual(plan.deleteTags.map((v) => v.tag), ['old']);
  t.deepEqual(plan.deleteManifests.map((m) => m.digest).sort(), [d('gc'), d('gone'), d('gonesig')].sort());
  t.regex(plan.deleteManifests.find((m) => m.digest === d('gone'))!.reason, /^untagged once old goes, pushed 10 days ago/);
  for (const k of ['i', 'c1', 'c2', 'sig', 'sigsig', 'young', 'yc', 'shared']) t.true(plan.kept.has(d(k)), k);
});

test('a referrers-schema tag of a kept manifest stays, with what it names', (t) => {
  const subjectHex = 'a'.repeat(64);
  const subject = `sha256:${subjectHex}`;
  t.is(referrersTagSubject(`sha256-${subjectHex}.sig`), subject);
  t.is(referrersTagSubject('v1.2'), undefined);
  const rule = ruleOf('      keep: {mostrecent: 1}\n', '      untagged: {olderthan: 1h}\n');
  const plan = decideRetention(input(rule, {
    tags: [tag('app', subject, DAY), tag(`sha256-${subjectHex}.sig`, d('s'), 2 * DAY), tag(`sha256-${'b'.repeat(64)}.sig`, d('o'), 2 * DAY)],
    manifests: [man(subject, DAY), man(d('s'), 2 * DAY), man(d('o'), 2 * DAY)],
  }));
  t.deepEqual(plan.deleteTags.map((v) => v.tag), [`sha256-${'b'.repeat(64)}.sig`]);
  t.deepEqual(plan.deleteManifests.map((m) => m.digest), [d('o')]);
  t.regex(plan.tags.find((v) => v.tag.endsWith('aaaa.sig'))!.reason, /^referrers tag of kept manifest/);
});

test('formatAge uses the largest whole unit', (t) => {
  t.is(formatAge(41 * DAY + 5 * HOUR), '41 days');
  t.is(formatAge(HOUR), '1 hour');
  t.is(formatAge(90_000), '1 minute');
  t.is(formatAge(10), '0 seconds');
});

/** A small deterministic PRNG (mulberry32), so a failure is reproducible from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

test('randomized: every verdict follows the rules, and nothing deleted is reachable from what stays', (t) => {
  const keepVariants = [
    '      keep: {mostrecent: 2}\n',
    '      keep: {pulledwithin: 48h}\n',
    "      keep: {mostrecent: 1, pulledwithin: 24h, tags: ['keep*']}\n",
    "      keep: {tags: ['keep*']}\n",
    '',
  ];
  for (let seed = 1; seed <= 400; seed++) {
    const rand = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const keepText = pick(keepVariants);
    const rule = ruleOf(keepText, keepText === '' || rand() < 0.8 ? '      untagged: {olderthan: 24h}\n' : '');
    const n = 1 + Math.floor(rand() * 8);
    const digests = Array.from({ length: n }, (_, i) => d(`${seed}${i}`));
    const manifests = digests.map((digest, i) => {
      const children = digests.slice(i + 1).filter(() => rand() < 0.2);
      const subject = i > 0 && rand() < 0.25 ? pick(digests.slice(0, i)) : undefined;
      return man(digest, Math.floor(rand() * 4 * DAY), { children, ...(subject ? { subject } : {}) });
    });
    const tags = Array.from({ length: Math.floor(rand() * 6) }, (_, i) => tag(`${rand() < 0.2 ? 'keep' : 't'}${i}`, pick(digests), Math.floor(rand() * 5 * DAY)));
    const pulls = { tags: new Map<string, number>(), digests: new Map<string, number>() };
    for (const tg of tags) if (rand() < 0.3) pulls.tags.set(tg.tag, NOW - Math.floor(rand() * 4 * DAY));
    for (const dg of digests) if (rand() < 0.3) pulls.digests.set(dg, NOW - Math.floor(rand() * 4 * DAY));
    const immutableTags = new Set(tags.filter(() => rand() < 0.15).map((tg) => tg.tag));
    const plan = decideRetention(input(rule, { tags, manifests, pulls, immutable: (tg) => (immutableTags.has(tg) ? 'imm' : undefined) }));

    const ctx = `seed ${seed}`;
    const deleted = new Set(plan.deleteTags.map((v) => v.tag));
    const ranked = [...tags].sort((a, b) => b.pushedAt - a.pushedAt || (a.tag < b.tag ? -1 : 1));
    for (const tg of tags) {
      const keep = rule.keep;
      const pulled = Math.max(pulls.tags.get(tg.tag) ?? -Infinity, pulls.digests.get(tg.digest) ?? -Infinity);
      const mustKeep = !keep || immutableTags.has(tg.tag) || keep.isKeptTag(tg.tag) ||
        (keep.mostRecent !== undefined && ranked.indexOf(tg) < keep.mostRecent) ||
        (keep.pulledWithinMs !== undefined && NOW - pulled <= keep.pulledWithinMs);
      if (mustKeep) t.false(deleted.has(tg.tag), `${ctx}: ${tg.tag} must stay`);
      else if (!deleted.has(tg.tag)) t.regex(plan.tags.find((v) => v.tag === tg.tag)!.reason, /^referrers tag/, ctx);
    }
    const gone = new Set(plan.deleteManifests.map((m) => m.digest));
    if (rule.untaggedOlderThanMs === undefined) t.is(gone.size, 0, ctx);
    // What stays: remaining tags and young manifests; from them, children and referrers must all stay.
    const byDigest = new Map(manifests.map((m) => [m.digest, m]));
    const queue = [...tags.filter((tg) => !deleted.has(tg.tag)).map((tg) => tg.digest), ...manifests.filter((m) => NOW - m.createdAt < DAY).map((m) => m.digest)];
    const seen = new Set<string>();
    while (queue.length > 0) {
      const x = queue.pop()!;
      if (seen.has(x)) continue;
      seen.add(x);
      t.false(gone.has(x), `${ctx}: ${x} is needed but deleted`);
      queue.push(...(byDigest.get(x)?.children ?? []), ...manifests.filter((m) => m.subject === x).map((m) => m.digest));
    }
    // And everything old and unreachable goes.
    if (rule.untaggedOlderThanMs !== undefined) for (const m of manifests) if (!seen.has(m.digest)) t.true(gone.has(m.digest), `${ctx}: ${m.digest} should go`);
  }
});

test('pulledwithin trusts "not pulled" only once the records cover the window', (t) => {
  const rule = ruleOf('      keep: {pulledwithin: 24h}\n');
  const base = input(rule, { tags: [tag('old', d(1), 10 * DAY)] });
  t.false(decideRetention(base).tags[0]!.keep, 'complete records (no pullsSince): never pulled, deleted');
  const young = decideRetention({ ...base, pullsSince: NOW - 2 * HOUR }).tags[0]!;
  t.true(young.keep);
  t.regex(young.reason, /pulls are recorded only for 2 hours?, less than pulledwithin/);
  t.false(decideRetention({ ...base, pullsSince: NOW - 25 * HOUR }).tags[0]!.keep);
});
