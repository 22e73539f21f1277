/*
 * fuzz_page.c: libFuzzer target for the Query Refunds page parser.
 *
 * wixapi_query_refunds() runs in API-key mode over a fake transport that
 * answers every request with the input as the body (HTTP 200), or, when
 * the first byte is 0x01, the rest as a 400 to a request carrying a
 * cursor (the error-body parser and the "cursor rejected" check).  The
 * clock is fake too, so nothing sleeps.  Invariants: a page is used only
 * when every refund on it parsed, with well-formed money; an empty page
 * has no array; a cursor is never "".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/wixapi.h"
#include "domain/money.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static struct wixapi	*api;
static const uint8_t	*cur_data;
static size_t		 cur_size;
static long		 cur_status;
static int64_t		 fake_ms;

static enum rs_status
fake_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	resp->status = cur_status;
	resp->body = malloc(cur_size + 1);
	CHECK(resp->body != NULL);
	memcpy(resp->body, cur_data, cur_size);
	resp->body[cur_size] = '\0';
	resp->body_len = cur_size;
	return RS_OK;
}

static int64_t
fake_now(void *ctx)
{
	return fake_ms;
}

static void
fake_sleep(void *ctx, int64_t ms)
{
	fake_ms += ms;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct wixapi_options o;
	char *why = NULL;

	memset(&o, 0, sizeof(o));
	o.api_base = "https://wix.test";
	o.api_key = "IST.fuzz-key";
	o.site_id = "site-fuzz";
	o.connect_timeout_ms = 10;
	o.timeout_ms = 10;
	o.max_attempts = 1;
	o.backoff_base_ms = 1;
	o.backoff_max_ms = 1;
	o.transport = fake_transport;
	o.now_ms = fake_now;
	o.sleep_ms = fake_sleep;
	CHECK(wixapi_new(&o, &api, &why) == RS_OK);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wixapi_page page;
	struct wixapi_error err;
	const char *cursor = NULL;
	enum rs_status st;
	size_t i;

	cur_status = 200;
	cur_data = data;
	cur_size = size;
	if (size > 0 && data[0] == 0x01) {
		cur_status = 400;
		cur_data = data + 1;
		cur_size = size - 1;
		cursor = "cursor-1";
	}
	/* Keep the fake clock moving so the budget never binds. */
	fake_ms += 60 * 1000;
	st = wixapi_query_refunds(api, NULL, cursor, 100, NULL, &page, &err);
	if (st == RS_OK) {
		CHECK(cur_status == 200);
		CHECK((page.n == 0) == (page.refunds == NULL));
		CHECK(page.next_cursor == NULL || page.next_cursor[0] != '\0');
		for (i = 0; i < page.n; i++) {
			const struct refund *r = &page.refunds[i];

			CHECK(r->id != NULL && r->charge_id != NULL);
			CHECK(r->status != NULL && r->body != NULL);
			CHECK(money_currency_wellformed(r->currency));
			CHECK(money_decimal_wellformed(r->amount));
		}
	} else {
		CHECK(page.n == 0 && page.refunds == NULL);
		CHECK(page.next_cursor == NULL);
		if (cur_status == 400)
			CHECK(st == RS_ERR_INPUT || st == RS_ERR_RANGE);
		else
			CHECK(st == RS_ERR_INPUT);
		CHECK(err.http_status == cur_status);
	}
	wixapi_page_cleanup(&page);
	wixapi_error_cleanup(&err);
	return 0;
}
