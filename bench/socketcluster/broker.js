// The bench broker of SocketCluster 14.4.2: the default broker, nothing added.
'use strict';
const SCBroker = require('socketcluster/scbroker');

class Broker extends SCBroker {
  run() {
    console.log('bench broker ' + this.id + ' pid ' + process.pid);
  }
}

new Broker();
