// Server-Sent Events from a fetch() body, as the proxy relays them
// (CONTRACT 4.3): `data: <json>` events, then `data: [DONE]` after a clean end.

// Splits text into events as it arrives; push() returns the `data` payloads
// of the events completed so far (multi-line data joined with "\n").
export class SSEParser {
  constructor() {
    this.buffer = "";
  }

  push(text) {
    this.buffer += text.replace(/\r\n?/g, "\n");
    const out = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) out.push(data.join("\n"));
    }
    return out;
  }
}

// Reads `response.body` and calls onData(payload) for each event's data, in
// order. Resolves with {done} (true when [DONE] came); rejects with the
// reader's error (an AbortError when the fetch was aborted).
export async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  let done = false;
  for (;;) {
    const { value, done: ended } = await reader.read();
    const text = ended ? decoder.decode() : decoder.decode(value, { stream: true });
    for (const data of parser.push(text)) {
      if (data === "[DONE]") done = true;
      else onData(data);
    }
    if (ended) return { done };
  }
}
