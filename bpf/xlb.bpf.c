// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xlb's XDP program. It sends to the AF_XDP socket of the receiving queue only what xlb must
 * see: ARP requests and IPv6 neighbour solicitations for a VIP, ARP and neighbour
 * advertisements that claim a VIP (duplicate-address and conflict detection), and IPv4/IPv6
 * packets addressed to an owned VIP. Everything else is XDP_PASS, so the node's own traffic
 * never notices xlb, and a redirect to a queue with no socket bound falls back to XDP_PASS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xlb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XLB_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_VIPS);
	__type(key, struct xlb_vip_key);
	__type(value, __u32);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_CLASS_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ARPOP_REQUEST_ 1
#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define IPPROTO_ICMPV6_ 58

static __always_inline void count(__u32 class)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &class);
	if (c)
		*c += 1;
}

static __always_inline __u32 vip_flags(__u8 family, const void *addr)
{
	struct xlb_vip_key key = {};
	__u32 *flags;

	key.family = family;
	if (family == XLB_FAMILY_V4)
		__builtin_memcpy(key.addr, addr, 4);
	else
		__builtin_memcpy(key.addr, addr, 16);
	flags = bpf_map_lookup_elem(&vips, &key);
	return flags ? *flags : 0;
}

/* Whether the VIP's traffic (not its neighbour traffic) goes to userspace. */
static __always_inline int takes_traffic(__u32 flags)
{
	return (flags & XLB_VIP_TRAFFIC) && !(flags & XLB_VIP_LOCAL);
}

static __always_inline int to_socket(struct xdp_md *ctx, __u32 class)
{
	__u32 queue = ctx->rx_queue_index;

	count(class);
	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		count(XLB_CLASS_NO_SOCKET);
		return XDP_PASS;
	}
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

/* ARP for Ethernet and IPv4, the only kind xlb answers (RFC 826 layout). */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

struct ipv4_min {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
} __attribute__((packed));

struct ipv6_min {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
} __attribute__((packed));

/* ICMPv6 neighbour solicitation / advertisement up to the target address. */
struct nd_min {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 reserved;
	__u8 target[16];
} __attribute__((packed));

SEC("xdp")
int xlb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		goto pass;
	proto = eth->h_proto;
	l3 = eth + 1;

	/* Up to two VLAN tags (802.1ad outer, 802.1Q inner). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		if (l3 + 4 > data_end)
			goto pass;
		proto = *(__be16 *)(l3 + 2);
		l3 += 4;
	}

	if (proto == bpf_htons(XLB_ETH_P_HEARTBEAT))
		return to_socket(ctx, XLB_CLASS_HEARTBEAT);

	if (proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = l3;

		if ((void *)(arp + 1) > data_end)
			goto pass;
		if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) ||
		    arp->hlen != 6 || arp->plen != 4)
			goto pass;
		if (arp->op == bpf_htons(ARPOP_REQUEST_) &&
		    (vip_flags(XLB_FAMILY_V4, arp->tpa) & XLB_VIP_NEIGH))
			return to_socket(ctx, XLB_CLASS_ARP_REQUEST);
		if (vip_flags(XLB_FAMILY_V4, arp->spa) & XLB_VIP_NEIGH)
			return to_socket(ctx, XLB_CLASS_ARP_WATCH);
		goto pass;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct ipv4_min *ip = l3;

		if ((void *)(ip + 1) > data_end)
			goto pass;
		if (takes_traffic(vip_flags(XLB_FAMILY_V4, ip->daddr)))
			return to_socket(ctx, XLB_CLASS_VIP_V4);
		goto pass;
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6_min *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			goto pass;
		if (ip6->nexthdr == IPPROTO_ICMPV6_) {
			struct nd_min *nd = (void *)(ip6 + 1);

			if ((void *)(nd + 1) <= data_end && nd->code == 0) {
				__u32 f = vip_flags(XLB_FAMILY_V6, nd->target) & XLB_VIP_NEIGH;

				if (nd->type == ICMPV6_NS && f)
					return to_socket(ctx, XLB_CLASS_NDP_SOLICIT);
				if (nd->type == ICMPV6_NA && f)
					return to_socket(ctx, XLB_CLASS_NDP_ADVERT);
			}
		}
		if (takes_traffic(vip_flags(XLB_FAMILY_V6, ip6->daddr)))
			return to_socket(ctx, XLB_CLASS_VIP_V6);
		goto pass;
	}

pass:
	count(XLB_CLASS_PASS);
	return XDP_PASS;
}
