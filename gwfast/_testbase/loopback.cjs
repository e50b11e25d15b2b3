// Preload (node --require FILE, or NODE_OPTIONS="--require FILE") that keeps every TCP
// server of the process on loopback: servers such as server-everything bind all
// interfaces and take no host option. Unix sockets, fds and handles are left alone.
// LOOPBACK_HOST overrides the address (default 127.0.0.1).
'use strict';
const net = require('net');

const HOST = process.env.LOOPBACK_HOST || '127.0.0.1';
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
}

net.Server.prototype.listen = function listen(...args) {
  const first = args[0];
  if (args.length === 0 || typeof first === 'function' || first === undefined || first === null) {
    // listen() / listen(cb): a random port on every interface
    args.splice(0, args.length && typeof first !== 'function' ? 1 : 0, 0, HOST);
  } else if (isPort(first)) {
    // listen(port[, host][, backlog][, cb])
    const second = args[1];
    if (typeof second === 'string' || second === undefined || second === null) {
      if (args.length > 1) args[1] = HOST;
      else args.push(HOST);
    } else {
      args.splice(1, 0, HOST);
    }
  } else if (typeof first === 'object' && !('path' in first) && !('fd' in first) &&
             !('_handle' in first) && !('handle' in first)) {
    // listen(options[, cb])
    args[0] = { ...first, host: HOST };
  }
  return originalListen.apply(this, args);
};
