/*
 * addresses.h — client addresses and the elmo_oscp.allowed_clients list of
 * addresses and CIDR ranges.  Plain C: the listener checks it while
 * libmicrohttpd accepts a connection, and the setting's check uses the same
 * parser, so a list the listener could not read is refused at SET or reload.
 */
#ifndef ELMO_ADDRESSES_H
#define ELMO_ADDRESSES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* An address as IPv6; IPv4 as IPv4-mapped (::ffff:a.b.c.d), so one form fits both. */
typedef struct ClientAddress
{
	unsigned char b[16];
} ClientAddress;

typedef struct AddressRange
{
	ClientAddress addr;
	int			bits;			/* prefix length, of the IPv6 form */
} AddressRange;

extern bool address_of(const struct sockaddr *sa, socklen_t len, ClientAddress *out);
extern void address_format(const ClientAddress *a, char *buf, size_t size);

extern bool address_list_parse(const char *text, AddressRange **ranges, int *n,
							   char *error, size_t error_size);
extern bool address_list_match(const AddressRange *ranges, int n, const ClientAddress *a);

#endif							/* ELMO_ADDRESSES_H */
