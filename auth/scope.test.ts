import test from 'ava';
import { allows, formatScope, missingAccess, parseScope, parseScopes } from './scope.js';

test('scopes parse as type:name:actions, with a port in the name and a resource class', (t) => {
  t.deepEqual(parseScope('repository:team/app:pull,push'), { type: 'repository', name: 'team/app', actions: ['pull', 'push'] });
  t.deepEqual(parseScope('repository:localhost:5000/app:pull'), { type: 'repository', name: 'localhost:5000/app', actions: ['pull'] });
  t.deepEqual(parseScope('repository(plugin):a/b:pull'), { type: 'repository', class: 'plugin', name: 'a/b', actions: ['pull'] });
  t.deepEqual(parseScope('registry:catalog:*'), { type: 'registry', name: 'catalog', actions: ['*'] });
  t.is(formatScope(parseScope('repository:localhost:5000/app:pull,push')!), 'repository:localhost:5000/app:pull,push');
});

test('malformed scopes are dropped', (t) => {
  for (const bad of ['', 'repository', 'repository:app', 'repository::pull', 'repository:app:', 'REPO:app:pull',
    'repository:app:pu ll', 'repository:a"b:pull', `repository:${'a'.repeat(600)}:pull`]) {
    t.is(parseScope(bad), undefined, bad.slice(0, 30));
  }
});

test('several scope parameters and space-joined scopes merge per resource', (t) => {
  t.deepEqual(parseScopes(['repository:a:pull', 'repository:a:push repository:b:pull', 'junk']), [
    { type: 'repository', name: 'a', actions: ['pull', 'push'] },
    { type: 'repository', name: 'b', actions: ['pull'] },
  ]);
  t.is(parseScopes(Array.from({ length: 100 }, (_, i) => `repository:r${i}:pull`)).length, 32);
});

test('granted access covers exactly its resource and actions', (t) => {
  const granted = [{ type: 'repository', name: 'a', actions: ['pull'] }, { type: 'repository', name: 'all', actions: ['*'] }];
  t.true(allows(granted, 'repository', 'a', 'pull'));
  t.false(allows(granted, 'repository', 'a', 'push'));
  t.false(allows(granted, 'repository', 'b', 'pull'));
  t.true(allows(granted, 'repository', 'all', 'delete'));
  t.deepEqual(missingAccess(granted, [{ type: 'repository', name: 'a', actions: ['pull', 'push'] }]),
    [{ type: 'repository', name: 'a', actions: ['push'] }]);
});
