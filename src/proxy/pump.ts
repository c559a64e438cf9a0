import type { Readable, Writable } from 'node:stream';

/**
 * `source.pipe(destination)` for a source and a destination whose errors and closing the caller
 * handles itself: each chunk is written, the source pauses while the destination is full, and the
 * destination ends with the source. `pipe` allocates about ten closures and three `once` wrappers
 * per call, held as long as the stream is open: with ten thousand open streams, tens of megabytes
 * (bench/README.md). Returns a function that stops the pumping.
 */
export function pump(source: Readable, destination: Writable): () => void {
  const onData = (chunk: Buffer | string) => {
    if (!destination.write(chunk)) source.pause();
  };
  const onDrain = () => source.resume();
  const onEnd = () => destination.end();
  source.on('data', onData);
  source.on('end', onEnd);
  destination.on('drain', onDrain);
  return () => {
    source.off('data', onData);
    source.off('end', onEnd);
    destination.off('drain', onDrain);
  };
}
