/*
 * fuzz_readback.c: libFuzzer target for reading back what the file
 * exporters wrote (readback.h), which reconcile does with files an
 * operator may have edited by hand.
 *
 * The first byte picks the type (jsonl, csv, ledger, beancount); the
 * rest is the file, written to one temporary file that each input
 * replaces.  Invariants: every record is handed out with a line, in
 * file order; one that is not damaged has a refund id; one that is
 * damaged says why; an amount in minor units has a sane exponent.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exporters/readback.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static const char *const types[] = { "jsonl", "csv", "ledger", "beancount" };

static char	path[64];

struct seen {
	int64_t	line;		/* of the last record handed out */
	size_t	n;
};

static enum rs_status
on_entry(void *arg, const struct readback_entry *e)
{
	struct seen *s = arg;

	CHECK(e->line >= 1 && e->line >= s->line);
	s->line = e->line;
	s->n++;
	if (e->damaged)
		CHECK(e->why != NULL && e->why[0] != '\0');
	else
		CHECK(e->refund_id != NULL);
	if (e->has_amount)
		CHECK(e->exponent >= 0 && e->exponent <= 18);
	/* The texts are read, so the sanitizers see a bad pointer. */
	CHECK(e->key == NULL || strlen(e->key) < ((size_t)1 << 24));
	CHECK(e->status == NULL || strlen(e->status) < ((size_t)1 << 24));
	CHECK(e->currency == NULL || strlen(e->currency) < ((size_t)1 << 24));
	CHECK(e->amount == NULL || strlen(e->amount) < ((size_t)1 << 24));
	CHECK(e->date == NULL || strlen(e->date) < ((size_t)1 << 24));
	return RS_OK;
}

static void
remove_file(void)
{
	(void)unlink(path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	(void)argc;
	(void)argv;
	(void)snprintf(path, sizeof(path), "/tmp/fuzz-readback-XXXXXX");
	CHECK((fd = mkstemp(path)) >= 0);
	(void)close(fd);
	CHECK(atexit(remove_file) == 0);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_export_kv kv[2] = {
		{ "path", path },
		{ "refund_account", "Expenses:Refunds" },
	};
	struct seen s = { 0, 0 };
	const char *type;
	char *why = NULL;
	enum rs_status st;
	int fd;

	if (size == 0)
		return 0;
	type = types[data[0] % 4];
	CHECK((fd = open(path, O_WRONLY | O_TRUNC)) >= 0);
	CHECK(write(fd, data + 1, size - 1) == (ssize_t)(size - 1));
	CHECK(close(fd) == 0);
	st = readback_file(type, kv, data[0] % 4 >= 2 ? 2 : 1, on_entry, &s,
	    &why);
	/* The file is there and readable: only a record can be wrong, and
	 * that is a damaged entry, not a failed read. */
	CHECK(st == RS_OK);
	CHECK(why == NULL);
	return 0;
}
