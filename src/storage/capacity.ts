/**
 * Options for an lru-cache bounded to `entries`. Given `max`, lru-cache preallocates every slot up
 * front: the gateway's caches would hold some 14 MB before their first entry. Counted by `maxSize`
 * at one unit an entry they have the same bound and grow only as entries arrive.
 */
export function growingCapacity(entries: number): { maxSize: number; sizeCalculation: () => number } {
  return { maxSize: entries, sizeCalculation: () => 1 };
}
