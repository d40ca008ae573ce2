export { FIELDS, FIELD_PATHS, FIELD_OF_FLAG, defaultPhrase, CERT_MODES, LOG_LEVELS, isCidr, type FieldPath, type FieldValues, type FieldSpec, type FlagSpec, type CertMode, type LogLevel } from './fields.js';
export { CONFIG_FILE_SCHEMA } from './schema.js';
export { loadConfigFile, parseConfigText, type LoadedConfig } from './load.js';
export { resolveServeConfig, reloadServeConfig, relayLimits, workerShare, COMMAND_LINE, type ServeConfig, type ServeLimits, type GivenFlags } from './resolve.js';
export { regionMapOf, regionMapJson } from './region.js';
export { exampleConfig, fieldTableMarkdown } from './example.js';
export { summarizeServeConfig } from './summary.js';
export * from './constants.js';
export { ConfigFileError, formatConfigIssue, type ConfigIssue } from '../errors.js';
