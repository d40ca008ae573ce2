export { RelayNode, type RelayNodeInit, type ReloadOutcome } from './node.js';
export { assessHealth, healthHandler, type HealthInputs, type HealthStatus } from './health.js';
export { Supervisor, WorkerStartError, type SupervisorInit, type SupervisorReady } from './supervisor.js';
export { EXIT_LISTEN, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, exitCodeOf } from './exit.js';
export { MAX_SEMI_SPACE_MIB, heapCapArgv, memoryReexec, operatorSetSemiSpace, reexecForMemory } from './heap.js';
export { JEMALLOC_CONF, JEMALLOC_PATHS, allocatorEnv, runningAllocator } from './allocator.js';
