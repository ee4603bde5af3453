// The bench worker of SocketCluster 14.4.2: `echo` answers its data, `pid` the worker's pid;
// it logs when it listens.
'use strict';
const SCWorker = require('socketcluster/scworker');

class Worker extends SCWorker {
  run() {
    console.log('bench worker ' + this.id + ' pid ' + process.pid);
    // bench/recovery.py times a respawned worker by this line: in Node's cluster the listening
    // socket stays in the worker cluster process, so /proc cannot show when a worker listens.
    this.httpServer.on('listening', () => console.log('bench worker listening pid ' + process.pid));
    this.scServer.on('connection', (socket) => {
      socket.on('echo', (data, respond) => respond(null, data));
      socket.on('pid', (data, respond) => respond(null, process.pid));
    });
  }
}

new Worker();
