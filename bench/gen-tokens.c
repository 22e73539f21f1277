/*
 * gen-tokens.c: write N distinct signed Refund Created webhooks, one JWT
 * per line, for the wrk load (bench/post.lua).
 *
 * usage: gen-tokens PRIVATE.pem N OUT [FIRST]   (ids FIRST .. FIRST+N-1)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

int
main(int argc, char *argv[])
{
	FILE *in, *out;
	char *pem;
	long n, sz;

	long first = 0;

	if (argc == 5)
		first = strtol(argv[4], NULL, 10);
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: gen-tokens PRIVATE.pem N OUT [FIRST]\n");
		return 2;
	}
	if ((in = fopen(argv[1], "r")) == NULL) {
		perror(argv[1]);
		return 1;
	}
	fseek(in, 0, SEEK_END);
	sz = ftell(in);
	rewind(in);
	pem = calloc(1, (size_t)sz + 1);
	if (pem == NULL || fread(pem, 1, (size_t)sz, in) != (size_t)sz) {
		fprintf(stderr, "gen-tokens: cannot read %s\n", argv[1]);
		return 1;
	}
	fclose(in);
	n = strtol(argv[2], NULL, 10);
	if ((out = fopen(argv[3], "w")) == NULL) {
		perror(argv[3]);
		return 1;
	}
	for (long i = first; i < first + n; i++) {
		char id[64], evid[64], charge[64], amount[32];
		struct tu_refund r;
		struct tu_event ev;
		char *tok;

		snprintf(id, sizeof(id), "bench-refund-%ld", i);
		snprintf(evid, sizeof(evid), "bench-event-%ld", i);
		snprintf(charge, sizeof(charge), "bench-charge-%ld", i);
		snprintf(amount, sizeof(amount), "%ld.%02ld", 1 + i % 500,
		    i % 100);
		memset(&r, 0, sizeof(r));
		r.id = id;
		r.charge_id = charge;
		r.currency = "USD";
		r.amount = amount;
		r.status = "SUCCEEDED";
		r.revision = 1;
		r.created_date = "2026-01-01T00:00:00.000Z";
		r.updated_date = "2026-01-01T00:00:00.000Z";
		memset(&ev, 0, sizeof(ev));
		ev.id = evid;
		ev.slug = TU_CREATED;
		ev.form = TU_FORM_OBJECT;
		ev.seq = 1;
		tok = tu_refund_webhook(pem, &ev, &r, "bench-instance");
		if (tok == NULL)
			return 1;
		fprintf(out, "%s\n", tok);
		free(tok);
	}
	if (fclose(out) != 0) {
		perror(argv[3]);
		return 1;
	}
	free(pem);
	return 0;
}
