/*
 * addresses.c — client addresses, and the allowed_clients list: addresses
 * and CIDR ranges separated by commas or spaces ("10.0.0.0/8, 192.0.2.7
 * 2001:db8::/32").  IPv4 is kept as IPv4-mapped IPv6, so a client reaching a
 * dual-stack listener over IPv4 matches its IPv4 range.  Plain C (see
 * no_postgres.h).
 */
#include "addresses.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void
from_v4(const struct in_addr *in, ClientAddress *out)
{
	memcpy(out->b, v4_mapped, 12);
	memcpy(out->b + 12, &in->s_addr, 4);
}

/* The address of a socket peer; false for a family other than IPv4/IPv6. */
bool
address_of(const struct sockaddr *sa, socklen_t len, ClientAddress *out)
{
	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in))
	{
		from_v4(&((const struct sockaddr_in *) sa)->sin_addr, out);
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6))
	{
		memcpy(out->b, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
		return true;
	}
	return false;
}

void
address_format(const ClientAddress *a, char *buf, size_t size)
{
	if (memcmp(a->b, v4_mapped, 12) == 0)
		inet_ntop(AF_INET, a->b + 12, buf, size);
	else
		inet_ntop(AF_INET6, a->b, buf, size);
}

/* One "address[/bits]" item into *r; false with *error set. */
static bool
parse_item(const char *item, AddressRange *r, char *error, size_t error_size)
{
	char		host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(item, '/');
	size_t		hlen = slash ? (size_t) (slash - item) : strlen(item);
	struct in_addr a4;
	int			max_bits;
	long		bits;

	if (hlen >= sizeof(host))
		goto bad;
	memcpy(host, item, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, &a4) == 1)
	{
		from_v4(&a4, &r->addr);
		max_bits = 32;
	}
	else if (inet_pton(AF_INET6, host, r->addr.b) == 1)
		max_bits = 128;
	else
		goto bad;
	bits = max_bits;
	if (slash)
	{
		char	   *end;

		if (!isdigit((unsigned char) slash[1]))
			goto bad;
		bits = strtol(slash + 1, &end, 10);
		if (*end != '\0' || bits > max_bits)
			goto bad;
	}
	r->bits = (int) bits + (128 - max_bits);
	for (int i = r->bits; i < 128; i++)
		if (r->addr.b[i / 8] & (0x80 >> (i % 8)))
		{
			snprintf(error, error_size, "\"%s\" has bits set right of its mask: write the network address, for example 10.0.0.0/8",
					 item);
			return false;
		}
	return true;
bad:
	snprintf(error, error_size, "\"%s\" is not an IP address or a CIDR range (address/bits)", item);
	return false;
}

/*
 * Parse the list into malloc'd *ranges (NULL and 0 for an empty list); when
 * ranges is NULL, only check it.  False with *error set if an item is bad.
 */
bool
address_list_parse(const char *text, AddressRange **ranges, int *n, char *error, size_t error_size)
{
	size_t		len = strlen(text);
	char	   *copy = malloc(len + 1);
	AddressRange *out = malloc(sizeof(AddressRange) * (len / 2 + 1));
	int			count = 0;
	bool		ok = true;

	if (copy == NULL || out == NULL)
	{
		snprintf(error, error_size, "out of memory");
		ok = false;
	}
	else
	{
		char	   *save = NULL;

		memcpy(copy, text, len + 1);
		for (char *item = strtok_r(copy, ", \t\n", &save); ok && item;
			 item = strtok_r(NULL, ", \t\n", &save))
			ok = parse_item(item, &out[count++], error, error_size);
	}
	free(copy);
	if (!ok || ranges == NULL || count == 0)
	{
		free(out);
		out = NULL;
	}
	if (ranges)
		*ranges = ok ? out : NULL;
	if (n)
		*n = ok ? count : 0;
	return ok;
}

static bool
in_range(const AddressRange *r, const ClientAddress *a)
{
	int			full = r->bits / 8;
	int			rest = r->bits % 8;

	if (memcmp(r->addr.b, a->b, full) != 0)
		return false;
	return rest == 0 || ((r->addr.b[full] ^ a->b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

bool
address_list_match(const AddressRange *ranges, int n, const ClientAddress *a)
{
	for (int i = 0; i < n; i++)
		if (in_range(&ranges[i], a))
			return true;
	return false;
}
