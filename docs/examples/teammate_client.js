// A teammate's program in JavaScript (Node.js 18 or newer, no packages):
// it sends one JSON line over TCP to the word-count service and reads one
// JSON line back. Nothing about it depends on the service being Python.
//
//   node docs/examples/teammate_client.js 3001 "the text to count"
const net = require("node:net");

const port = Number(process.argv[2] ?? 3001);
const text = process.argv[3] ?? "A message from CS361";
const where = `127.0.0.1:${port}`;

const socket = net.createConnection({ host: "127.0.0.1", port }, () => {
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
  const end = received.indexOf("\n");
  if (end < 0) return; // TCP may deliver the reply in pieces: wait for "\n"
  const reply = JSON.parse(received.slice(0, end));
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
});
socket.on("error", (err) => {
  console.error(`cannot reach the service at ${where}: ${err.message}`);
  process.exitCode = 1;
});
