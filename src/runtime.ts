// Imported first by the command line, before any dependency, so an unsupported Node.js stops with one
// line naming the version it needs instead of a syntax or module error from deep inside a library.
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `gatehouse: Node.js ${process.versions.node} is not supported; it needs Node.js 22.12 or later (24 LTS recommended)\n`,
  );
  process.exit(1);
}
