import test from 'ava';
import type { Authentication, Authenticator } from './authenticator.js';
import { Authorizer, type AccessDecision, type AccessRequest } from './authorizer.js';
import { Policy } from './policy.js';
import type { Access } from './scope.js';

/** An authenticator that answers what the test says, whatever the credentials. */
function fixed(result: Authentication): Authenticator {
  return { scheme: 'basic', authenticate: async () => result };
}

const anonymous: Authentication = { ok: true, identity: { authenticated: false } };
const user = (subject: string, access?: Access[]): Authentication => ({ ok: true, identity: { authenticated: true, subject, access } });

const rules = new Policy({
  anonymous: ['public/**'],
  rules: [
    { users: ['alice'], repositories: ['team/*'], actions: ['pull', 'push'], catalog: true },
    { users: ['bob'], repositories: ['team/*'], actions: ['pull'] },
  ],
});

const pull = (name: string): Access => ({ type: 'repository', name, actions: ['pull'] });
const push = (name: string): Access => ({ type: 'repository', name, actions: ['pull', 'push'] });

function decide(result: Authentication, request: Partial<AccessRequest>, policy = rules): Promise<AccessDecision> {
  return new Authorizer(fixed(result), policy).authorize({ credentials: { scheme: 'none' }, address: '10.0.0.1', required: [], ...request });
}

test('refused credentials are a challenge for the required scope; throttled ones are throttled', async (t) => {
  for (const refusal of ['malformed', 'wrong-scheme', 'rejected'] as const) {
    t.deepEqual(await decide({ ok: false, refusal, reason: 'why' }, { required: [pull('team/app')] }),
      { kind: 'challenge', reason: refusal, scope: [pull('team/app')], detail: 'why' });
  }
  t.deepEqual(await decide({ ok: false, refusal: 'throttled' }, { required: [pull('team/app')] }), { kind: 'throttled' });
});

test('the base route needs credentials, not access', async (t) => {
  t.like(await decide(anonymous, { base: true }), { kind: 'challenge', reason: 'anonymous', scope: [] });
  t.like(await decide(user('carol'), { base: true }), { kind: 'allow', user: 'carol', dropMount: false });
});

test('by the rules: anonymous callers are challenged, users without the right denied with what they lack', async (t) => {
  t.like(await decide(anonymous, { required: [pull('public/x')] }), { kind: 'allow', user: undefined });
  t.like(await decide(anonymous, { required: [pull('team/app')] }), { kind: 'challenge', reason: 'anonymous', scope: [pull('team/app')] });
  t.like(await decide(user('alice'), { required: [push('team/app')] }), { kind: 'allow', user: 'alice' });
  t.deepEqual(await decide(user('bob'), { required: [push('team/app')] }),
    { kind: 'deny', user: 'bob', missing: [{ type: 'repository', name: 'team/app', actions: ['push'] }] });
});

test('by a token: its access claim decides; lacking scope is a challenge, not a denial', async (t) => {
  const token = user('bob', [push('team/app')]);
  t.like(await decide(token, { required: [push('team/app')] }), { kind: 'allow', user: 'bob' }, 'the claim, not the rules');
  t.like(await decide(token, { required: [pull('team/other')] }), { kind: 'challenge', reason: 'insufficient-scope', user: 'bob', scope: [pull('team/other')] });
});

test('a mount source: an anonymous caller is asked for it too; an unreadable one drops the mount', async (t) => {
  t.like(await decide(anonymous, { required: [push('team/app')], mountFrom: 'team/base' }),
    { kind: 'challenge', reason: 'anonymous', scope: [push('team/app'), pull('team/base')] });
  t.like(await decide(user('alice'), { required: [push('team/app')], mountFrom: 'team/base' }), { kind: 'allow', dropMount: false });
  t.like(await decide(user('alice'), { required: [push('team/app')], mountFrom: 'secret/base' }), { kind: 'allow', dropMount: true });
  t.like(await decide(user('x', [push('team/app')]), { required: [push('team/app')], mountFrom: 'team/base' }), { kind: 'allow', dropMount: true },
    'a token must grant pull on the source itself');
});

test('the catalog: filtered to pullable names under rules, unfiltered without them', async (t) => {
  const catalog: Access = { type: 'registry', name: 'catalog', actions: ['*'] };
  const decision = await decide(user('alice'), { required: [catalog], catalog: true });
  if (decision.kind !== 'allow' || !decision.catalogFilter) return t.fail('expected a filtered allow');
  t.true(decision.catalogFilter('team/app'));
  t.true(decision.catalogFilter('public/x'));
  t.false(decision.catalogFilter('secret/x'));
  t.like(await decide(user('bob'), { required: [catalog], catalog: true }), { kind: 'deny', missing: [catalog] });
  const open = await decide(user('bob'), { required: [catalog], catalog: true }, new Policy());
  t.like(open, { kind: 'allow', catalogFilter: undefined });
});
