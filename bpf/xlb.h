/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the XDP program and xlb's Rust code share: map layouts, value flags and the
 * classification counters. Both sides must agree byte for byte; src/io/xdp.rs mirrors this
 * file and its tests check the sizes against the generated skeleton types.
 */
#ifndef XLB_SHARED_H
#define XLB_SHARED_H

#define XLB_MAX_QUEUES 256
#define XLB_MAX_VIPS 65536

#define XLB_FAMILY_V4 4
#define XLB_FAMILY_V6 6

/* EtherType of xlb's heartbeats between nodes (IEEE 802 local experimental 1). */
#define XLB_ETH_P_HEARTBEAT 0x88B5

/* Key of the VIP map: the address family and the address, IPv4 in the first four bytes of
 * addr with the other twelve zero. */
struct xlb_vip_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* Value flags of the VIP map. */
/* The VIP is owned: answer ARP/NDP for it and take its traffic. */
#define XLB_VIP_OWNED (1u << 0)
/* The VIP is being probed (duplicate-address detection) before it is announced: only the
 * neighbour traffic that could reveal a conflict goes to userspace. */
#define XLB_VIP_PROBING (1u << 1)
/* Another node announces the VIP; this one forwards what still reaches it (a client that
 * has not yet learnt the new MAC) without answering ARP/NDP or watching for claims. */
#define XLB_VIP_FORWARD (1u << 2)
/* The VIP's traffic is this node's own: its service proxy (kube-proxy) serves the VIP, so
 * the kernel gets its packets; xlb only answers ARP/NDP for it (with XLB_VIP_OWNED). */
#define XLB_VIP_LOCAL (1u << 3)
/* The flags whose VIPs' neighbour traffic goes to userspace. */
#define XLB_VIP_NEIGH (XLB_VIP_OWNED | XLB_VIP_PROBING)
/* The flags whose VIPs' traffic goes to userspace (unless XLB_VIP_LOCAL is set too). */
#define XLB_VIP_TRAFFIC (XLB_VIP_OWNED | XLB_VIP_FORWARD)

/* Indexes of the per-CPU classification counters (the `stats` map). */
enum xlb_class {
	XLB_CLASS_PASS = 0,          /* not ours: handed to the kernel */
	XLB_CLASS_ARP_REQUEST = 1,   /* ARP request whose target is a VIP */
	XLB_CLASS_ARP_WATCH = 2,     /* ARP whose sender claims a VIP (conflict watch) */
	XLB_CLASS_NDP_SOLICIT = 3,   /* neighbour solicitation for a VIP */
	XLB_CLASS_NDP_ADVERT = 4,    /* neighbour advertisement for a VIP (conflict watch) */
	XLB_CLASS_VIP_V4 = 5,        /* IPv4 packet to an owned VIP */
	XLB_CLASS_VIP_V6 = 6,        /* IPv6 packet to an owned VIP */
	XLB_CLASS_NO_SOCKET = 7,     /* of the others, how many found no socket on their queue (passed) */
	XLB_CLASS_HEARTBEAT = 8,     /* heartbeat of an xlb node (EtherType 0x88B5) */
	XLB_CLASS_COUNT = 9,
};

#endif
