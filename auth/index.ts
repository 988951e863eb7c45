/** Authentication and access control, free of any HTTP framework; `server/http/auth.ts` adapts it to Koa. */
export * from './scope.js';
export * from './repository-name.js';
export * from './htpasswd.js';
export * from './policy.js';
export * from './throttle.js';
export * from './keys.js';
export * from './token.js';
export * from './authenticator.js';
export * from './authorizer.js';
