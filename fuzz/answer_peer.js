// The raw-answer peer of fuzz/replay.lua (the fuzz harness has its own, in
// C): usage: node answer_peer.js DIR.  Listens on 127.0.0.1 at a free port
// and prints "PORT PID".  Each connection gets the next answer file of DIR
// (answer.1, answer.2, ...) written whole, then the end of the stream; none
// left: an empty reply.  The count starts again whenever DIR/gen changes
// (replay.lua writes it with each new list of answers).
'use strict';
const net = require('net');
const fs = require('fs');
const dir = process.argv[2];
let gen = null;
let next = 1;
const server = net.createServer((sock) => {
  sock.on('error', () => {});
  let g = '';
  try { g = fs.readFileSync(dir + '/gen', 'utf8'); } catch (e) { g = ''; }
  if (g !== gen) { gen = g; next = 1; }
  let answer = null;
  try { answer = fs.readFileSync(dir + '/answer.' + next); } catch (e) { answer = null; }
  next += 1;
  if (answer) sock.write(answer);
  sock.end();
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(server.address().port + ' ' + process.pid + '\n');
});
