# Backend servers for the lab tests: a TCP server that answers every connection with its
# name and the address the connection came from (the client in DSR, xlb's SNAT address in
# SNAT) and closes (as an HTTP/1.0 response to a GET; kept open and echoing for a first
# line "hold"), and a UDP echo that prefixes its name. TCP listens on the wildcard
# address (a reply always leaves from the address the connection was made to: the VIP);
# UDP binds the VIP itself, as a DSR backend must: a wildcard UDP socket would answer from
# the host's own address (SNAT backends give no VIP and bind the wildcard: they answer from
# their own address, which xlb translates back). Usage: servers.py NAME PORT 4|6 [VIP].
import socket, sys, threading

name, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if len(sys.argv) > 3 and sys.argv[3] == "6" else socket.AF_INET
bind = "::" if family == socket.AF_INET6 else "0.0.0.0"

def serve(c, peer):
    # "hold" keeps the connection: every line is echoed with the name until the client
    # closes (a long-lived connection); anything else gets one answer and the close.
    try:
        data = c.recv(1024)
        if data.startswith(b"hold"):
            c.sendall(("%s %s\n" % (name, peer[0])).encode())
            while True:
                data = c.recv(1024)
                if not data:
                    break
                c.sendall(name.encode() + b" " + data)
        elif data.startswith(b"GET "):
            # HTTP: health checks and curl get a real response, with the same body.
            body = ("%s %s\n" % (name, peer[0])).encode()
            head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
            c.sendall(head.encode() + body)
        else:
            c.sendall(("%s %s\n" % (name, peer[0])).encode())
    except OSError:
        pass
    finally:
        c.close()

def tcp():
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(1024)
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()

def udp():
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((sys.argv[4] if len(sys.argv) > 4 else bind, port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(name.encode() + b" " + data, peer)

threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
