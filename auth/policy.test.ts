import test from 'ava';
import { globToRegExp, Policy } from './policy.js';

const policy = new Policy({
  groups: { admins: ['alice'], dev: ['bob', 'carol'] },
  anonymous: ['public/**'],
  rules: [
    { groups: ['admins'], repositories: ['**'], actions: ['*'], catalog: true },
    { users: ['*'], repositories: ['${user}/**'], actions: ['pull', 'push', 'delete'] },
    { groups: ['dev'], repositories: ['team/*'], actions: ['pull', 'push'] },
    { users: ['carol'], repositories: ['team/?ld'], actions: ['delete'] },
  ],
});

test('globs: * stays within a component, ** crosses them, ${user} is the caller', (t) => {
  t.true(globToRegExp('team/*')!.test('team/app'));
  t.false(globToRegExp('team/*')!.test('team/app/sub'));
  t.true(globToRegExp('team/**')!.test('team/app/sub'));
  t.true(globToRegExp('${user}/**', 'bob')!.test('bob/x'));
  t.false(globToRegExp('${user}/**', 'bob')!.test('bobby/x'));
  t.false(globToRegExp('${user}/**', 'a.b')!.test('axb/x'), 'user names are matched literally');
  t.is(globToRegExp('${user}/**'), undefined, 'no user, no match');
});

test('actions are the union of matching rules, by user and by group', (t) => {
  t.deepEqual([...policy.repositoryActions('alice', 'anything/at/all')].sort(), ['delete', 'pull', 'push']);
  t.deepEqual([...policy.repositoryActions('bob', 'team/app')].sort(), ['pull', 'push']);
  t.deepEqual([...policy.repositoryActions('bob', 'team/app/deeper')], []);
  t.deepEqual([...policy.repositoryActions('carol', 'team/old')].sort(), ['delete', 'pull', 'push']);
  t.deepEqual([...policy.repositoryActions('bob', 'bob/tools')].sort(), ['delete', 'pull', 'push'], 'personal namespace');
  t.deepEqual([...policy.repositoryActions('bob', 'carol/tools')], [], 'not someone else\'s namespace');
  t.deepEqual([...policy.repositoryActions('mallory', 'team/app')], []);
});

test('anonymous callers may pull only the chosen repositories; users may too', (t) => {
  t.deepEqual([...policy.repositoryActions(undefined, 'public/base')], ['pull']);
  t.deepEqual([...policy.repositoryActions(undefined, 'team/app')], []);
  t.deepEqual([...policy.repositoryActions('mallory', 'public/base')], ['pull']);
});

test('grant intersects the request with the rules; a partial grant is not an error', (t) => {
  t.deepEqual(policy.grant('bob', [
    { type: 'repository', name: 'team/app', actions: ['pull', 'push', 'delete'] },
    { type: 'repository', name: 'secret/x', actions: ['pull'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ]), [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
  t.deepEqual(policy.grant('alice', [{ type: 'registry', name: 'catalog', actions: ['*'] }]),
    [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
  t.deepEqual(policy.grant('bob', [{ type: 'repository', name: 'team/app', actions: ['*'] }]),
    [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
  t.deepEqual(policy.grant(undefined, [{ type: 'repository', name: 'public/base', actions: ['pull', 'push'] }]),
    [{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
});

test('without rules every user may do everything and anonymous callers nothing (registry:2)', (t) => {
  const open = new Policy();
  t.false(open.hasRules);
  t.deepEqual([...open.repositoryActions('anyone', 'x/y')].sort(), ['delete', 'pull', 'push']);
  t.true(open.mayListCatalog('anyone'));
  t.deepEqual([...open.repositoryActions(undefined, 'x/y')], []);
  t.false(open.mayListCatalog(undefined));
});
