export * from './admission.js';
export * from './constants.js';
export * from './keylist.js';
export { StaticLists, type ListsSettings } from './lists.js';
export { keysOfDevices, parseOAuthClient, TailnetVerifier, type TailnetOptions } from './tailnet.js';
export { TailscaledVerifier, type TailscaledOptions } from './tailscaled.js';
export * from './types.js';
export { sourceIp } from './util.js';
export { parseAdmitResponse, WebhookVerifier, type WebhookOptions } from './webhook.js';
