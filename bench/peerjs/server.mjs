// PeerJS server for the relay benchmark: `node server.mjs PORT`, listening on 127.0.0.1.
// Defaults as shipped (key "peerjs", path "/"), so clients connect to /peerjs?key=peerjs&...
import { PeerServer } from "peer";

const port = Number(process.argv[2] || 9000);
PeerServer({ port, host: "127.0.0.1", path: "/", concurrent_limit: 100000 }, () => {
  console.log(`peerjs listening on ${port}`);
});
