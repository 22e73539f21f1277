/*
 * fuzz_config.c: libFuzzer target for the INI configuration parser.
 *
 * The input is written to a memfd and loaded with config_load() through
 * /proc/self/fd/N.  Invariants: a refusal is RS_ERR_CONFIG with a
 * non-empty error text and no config; an accepted config has every
 * string set, a webhook path starting with '/', absolute store path,
 * sane bounds, uniquely named exporters whose engine keys are in range,
 * and it equals itself (config_exporters_equal).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "adapters/config.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static int	fd = -1;
static char	path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fd = memfd_create("fuzz_config", 0);
	CHECK(fd != -1);
	CHECK(snprintf(path, sizeof(path), "/proc/self/fd/%d", fd) > 0);
	return 0;
}

static void
check_config(const struct config *cfg)
{
	size_t i, j;

	CHECK(cfg->path != NULL && cfg->dir != NULL);
	CHECK(cfg->listen != NULL && cfg->admin_listen != NULL);
	CHECK(cfg->webhook_path != NULL && cfg->webhook_path[0] == '/');
	CHECK(cfg->store_path != NULL);
	CHECK(cfg->store_path[0] == '/' || cfg->store_path[0] == '\0');
	CHECK(cfg->max_body > 0 && cfg->threads > 0);
	CHECK(cfg->npublic_key_files == 0 || cfg->public_key_files != NULL);
	for (i = 0; i < cfg->npublic_key_files; i++)
		CHECK(cfg->public_key_files[i] != NULL);
	for (i = 0; i < cfg->ninstances; i++)
		CHECK(cfg->instances[i] != NULL);
	for (i = 0; i < cfg->nexporters; i++) {
		const struct config_exporter *e = &cfg->exporters[i];

		CHECK(e->name != NULL && e->type != NULL);
		CHECK(strlen(e->name) >= 1 && strlen(e->name) <= 64);
		CHECK(e->batch >= 0 && e->batch <= 10000);
		CHECK(e->retry_max_ms >= e->retry_initial_ms);
		CHECK(config_exporter_find(cfg, e->name) == e);
		for (j = 0; j < e->nkv; j++)
			CHECK(e->kv[j].key != NULL && e->kv[j].value != NULL);
		for (j = 0; j < i; j++)
			CHECK(strcmp(cfg->exporters[j].name, e->name) != 0);
	}
	CHECK(config_exporters_equal(cfg, cfg));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	enum rs_status st;

	CHECK(ftruncate(fd, 0) == 0);
	CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
	st = config_load(path, &cfg, &errors);
	if (st == RS_OK) {
		CHECK(cfg != NULL);
		check_config(cfg);
		config_free(cfg);
	} else {
		CHECK(st == RS_ERR_CONFIG);
		CHECK(errors != NULL && errors[0] != '\0');
	}
	free(errors);
	return 0;
}
