/*
 * status.c: names for enum rs_status, for log lines and error bodies.
 */
#include "util/status.h"

const char *
rs_strstatus(enum rs_status st)
{
	switch (st) {
	case RS_OK:
		return "ok";
	case RS_ERR_INPUT:
		return "bad input";
	case RS_ERR_AUTH:
		return "not authenticated";
	case RS_ERR_TOOBIG:
		return "too large";
	case RS_ERR_RANGE:
		return "out of range";
	case RS_ERR_NOTFOUND:
		return "not found";
	case RS_ERR_BUSY:
		return "busy, retry later";
	case RS_ERR_IO:
		return "i/o error";
	case RS_ERR_CONFIG:
		return "configuration error";
	case RS_ERR_STOPPING:
		return "stopping";
	case RS_ERR_INTERNAL:
		return "internal error";
	}
	return "unknown status";
}
