// Reads a name from stdin and greets it.
const name = require('fs').readFileSync(0, 'utf8').trim() || 'world';
console.log(`hello, ${name}, from a CodeBeaker box`);
