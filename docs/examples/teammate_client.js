// A teammate's program in JavaScript (Node.js 18 or newer, no packages):
// it sends one JSON line over TCP to the word-count service and reads one
// JSON line back. Nothing about it depends on the service being Python.
//
//   node docs/examples/teammate_client.js 3001 "the text to count" [host]
//
// A service on another computer needs its token: set SPIKE_TOKEN.
const net = require("node:net");

const port = Number(process.argv[2] ?? 3001);
const text = process.argv[3] ?? "A message from CS361";
const host = process.argv[4] ?? "127.0.0.1";
const token = process.env.SPIKE_TOKEN;
const where = `${host}:${port}`;

const socket = net.createConnection({ host, port }, () => {
  // The token, when there is one, goes first: the auth line.
  if (token) socket.write(JSON.stringify({ op: "auth", token }) + "\n");
  // One request = one JSON object on one line, ended by "\n".
  const request = { op: "word_count", id: 1, text, top: 3 };
  socket.write(JSON.stringify(request) + "\n");
});
// Decodes UTF-8 even when a character is split across two chunks.
socket.setEncoding("utf8");
socket.setTimeout(5000, () => {
  console.error(`no reply from ${where} within 5 s`);
  process.exitCode = 1;
  socket.destroy();
});

let received = "";
socket.on("data", (chunk) => {
  received += chunk;
  let end;
  // TCP may deliver a reply in pieces, or two at once: cut at each "\n".
  while ((end = received.indexOf("\n")) >= 0) {
    const reply = JSON.parse(received.slice(0, end));
    received = received.slice(end + 1);
    if (reply.ok && reply.id !== 1) continue; // the auth line's reply
    socket.end();
    if (reply.ok) {
      const { words, characters, most_common } = reply.result;
      console.log(`${words} words, ${characters} characters`);
      for (const { word, count } of most_common) {
        console.log(`  ${word}: ${count}`);
      }
    } else {
      const { code, message } = reply.error;
      console.error(`the service refused the request: ${code}: ${message}`);
      process.exitCode = 1;
    }
    return;
  }
});
socket.on("error", (err) => {
  console.error(`cannot reach the service at ${where}: ${err.message}`);
  process.exitCode = 1;
});
