/** The data of one server-sent event: its `data:` lines joined (WHATWG HTML 9.2.6); undefined for a comment-only event. */
function dataOf(event: string): string | undefined {
  const lines = event.split(/\r?\n/).filter((line) => line.startsWith('data:'));
  return lines.length ? lines.map((line) => line.slice(5).replace(/^ /, '')).join('\n') : undefined;
}

/** The data of each event in a whole `text/event-stream` body, `[DONE]` included. */
export function eventData(text: string): string[] {
  return text.split(/\r?\n\r?\n/).flatMap((event) => dataOf(event) ?? []);
}

export interface EventReading {
  /** Each event's data and when it arrived (Date.now()), so far. */
  events: { data: string; at: number }[];
  /** How many reads the body took so far: fewer than events when the stream was buffered. */
  reads: number;
  /** Resolves when the body ends, cleanly or cut off (with the error's message), or reading was given up. */
  finished: Promise<{ at: number; error?: string }>;
  /** Stops reading a stream that should have ended by now; `gaveUp` says so afterwards. */
  giveUp(): void;
  gaveUp: boolean;
}

/** Reads a server-sent event body in the background, event by event, as a client shows them. */
export function readEvents(response: Response): EventReading {
  const reader = response.body!.getReader();
  const reading: Omit<EventReading, 'finished'> = {
    events: [],
    reads: 0,
    gaveUp: false,
    giveUp() {
      reading.gaveUp = true;
      void reader.cancel();
    },
  };
  const finished = (async () => {
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        const bytes = read.value;
        reading.reads += 1;
        buffered += decoder.decode(bytes, { stream: true });
        let boundary: RegExpExecArray | null;
        while ((boundary = /\r?\n\r?\n/.exec(buffered))) {
          const data = dataOf(buffered.slice(0, boundary.index));
          if (data !== undefined) reading.events.push({ data, at: Date.now() });
          buffered = buffered.slice(boundary.index + boundary[0].length);
        }
      }
      return { at: Date.now() };
    } catch (error) {
      return { at: Date.now(), error: (error as Error).message };
    }
  })();
  return Object.assign(reading, { finished });
}

/** Reads a whole server-sent event body: each event's data and when it arrived, and the reads it took. */
export async function readAllEvents(response: Response): Promise<Pick<EventReading, 'events' | 'reads'>> {
  const reading = readEvents(response);
  const { error } = await reading.finished;
  if (error) throw new Error(`the event stream broke off after ${reading.events.length} events: ${error}`);
  return reading;
}
