/** Entry point of a `derp serve --workers N` worker process (forked by supervisor.ts). */
import { runWorker } from './worker.js';

runWorker();
