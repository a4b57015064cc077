/*
 * HTTP answers and ELMO's error bodies.
 */
#include "answer.h"

#include "json_util.h"

resp_t R(int status, char *body)
{
	resp_t r = { status, body, 0 };
	return r;
}

resp_t R_json(json_t *j)
{
	return R(200, dump_steal(j));
}

resp_t R_error(int status, const char *message)
{
	return R(status, error_str(status, message));
}

const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status >= 500 ? "Internal Server Error" : "Error";
	}
}

json_t *error_object(int status, json_t *message)
{
	json_t *o = json_object();
	json_object_set_new(o, "message", message);
	json_object_set_new(o, "error", json_string(reason_phrase(status)));
	json_object_set_new(o, "statusCode", json_integer(status));
	return o;
}

char *error_body(int status, json_t *message)
{
	return dump_steal(error_object(status, message));
}

char *error_str(int status, const char *message)
{
	return error_body(status, json_string(message));
}
