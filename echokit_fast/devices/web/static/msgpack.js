// A MessagePack decoder for the server's events (docs/protocol.md, "Encoding"): one message is
// one value; byte fields arrive as arrays of integers (rmp-serde) or as bin.

export function decode(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder();
  let pos = 0;

  function str(n) {
    const s = text.decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  }
  function bin(n) {
    const b = bytes.slice(pos, pos + n);
    pos += n;
    return b;
  }
  function array(n) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = value();
    return out;
  }
  function map(n) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      out[key] = value();
    }
    return out;
  }
  function value() {
    if (pos >= bytes.length) throw new Error("truncated MessagePack message");
    const b = bytes[pos++];
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    let v;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: v = bytes[pos]; pos += 1; return bin(v);
      case 0xc5: v = view.getUint16(pos); pos += 2; return bin(v);
      case 0xc6: v = view.getUint32(pos); pos += 4; return bin(v);
      case 0xca: v = view.getFloat32(pos); pos += 4; return v;
      case 0xcb: v = view.getFloat64(pos); pos += 8; return v;
      case 0xcc: v = bytes[pos]; pos += 1; return v;
      case 0xcd: v = view.getUint16(pos); pos += 2; return v;
      case 0xce: v = view.getUint32(pos); pos += 4; return v;
      case 0xd0: v = view.getInt8(pos); pos += 1; return v;
      case 0xd1: v = view.getInt16(pos); pos += 2; return v;
      case 0xd2: v = view.getInt32(pos); pos += 4; return v;
      case 0xd9: v = bytes[pos]; pos += 1; return str(v);
      case 0xda: v = view.getUint16(pos); pos += 2; return str(v);
      case 0xdb: v = view.getUint32(pos); pos += 4; return str(v);
      case 0xdc: v = view.getUint16(pos); pos += 2; return array(v);
      case 0xdd: v = view.getUint32(pos); pos += 4; return array(v);
      case 0xde: v = view.getUint16(pos); pos += 2; return map(v);
      case 0xdf: v = view.getUint32(pos); pos += 4; return map(v);
      default: throw new Error("unsupported MessagePack byte 0x" + b.toString(16));
    }
  }

  const out = value();
  if (pos !== bytes.length) throw new Error("trailing bytes after a MessagePack message");
  return out;
}

// The fields of each event with fields, in their order on the wire (docs/protocol.md, "The events").
const FIELDS = {
  ASR: ["text"],
  Action: ["action"],
  Choices: ["message", "items"],
  StartAudio: ["text"],
  AudioChunk: ["data"],
  AudioChunkWithVowel: ["data", "vowel"],
  DisplayText: ["text"],
  HelloChunk: ["data"],
};

// One server event as {type, ...fields}: a unit variant is its name, a variant with fields a
// one-entry map of its name to the field values (an array in order, or a map with names).
export function decodeEvent(buffer) {
  const raw = decode(buffer);
  if (typeof raw === "string") return { type: raw };
  const keys = raw && typeof raw === "object" ? Object.keys(raw) : [];
  if (keys.length !== 1) throw new Error("not a server event");
  const type = keys[0];
  const body = raw[type];
  const event = { type };
  const names = FIELDS[type] || [];
  names.forEach((name, i) => {
    event[name] = Array.isArray(body) ? body[i] : body[name];
  });
  if ("data" in event && !(event.data instanceof Uint8Array)) {
    event.data = Uint8Array.from(event.data || []);
  }
  return event;
}
