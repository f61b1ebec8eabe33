/*
 * LaneWatch's identity plugin for Mosquitto 2.0 (plugin interface v5).
 *
 * Mosquitto checks a login's password (password_file) and what each login may publish and read
 * (acl_file), but nothing ties a client id or a client certificate to a login: any client with a
 * valid login could connect with another's client id and take its session over, or present
 * another user's certificate. This plugin refuses, before the password is even checked:
 *   - a client whose certificate's common name is not its username;
 *   - a client whose client id is neither its username nor "<username>:<something>".
 * Ids never contain ':' (lanewatch.ids), so one user's client ids can never be another's.
 * Everything else is left to the password file and the ACL (MOSQ_ERR_PLUGIN_DEFER).
 *
 * Built by `lanewatch site broker-config` (cc, with Debian's mosquitto-dev and libssl-dev).
 */

#include <string.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SEPARATOR ':'

static mosquitto_plugin_id_t *plugin_id = NULL;

/* 1 when the certificate's common name is exactly `username` (no embedded NUL), else 0. */
static int certificate_is(const struct mosquitto *client, const char *username)
{
	X509 *certificate = mosquitto_client_certificate(client);
	int same = 0;

	if(certificate == NULL){
		return 0;
	}
	X509_NAME *subject = X509_get_subject_name(certificate);
	int index = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
	if(index >= 0){
		ASN1_STRING *name = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
		const unsigned char *text = name ? ASN1_STRING_get0_data(name) : NULL;
		int length = name ? ASN1_STRING_length(name) : -1;
		same = text != NULL && length == (int)strlen(username) && memcmp(text, username, (size_t)length) == 0;
	}
	X509_free(certificate);
	return same;
}

/* 1 when `id` is `username` or "<username>:<at least one character>", else 0. */
static int id_belongs_to(const char *id, const char *username)
{
	size_t length = strlen(username);

	if(strncmp(id, username, length) != 0){
		return 0;
	}
	return id[length] == '\0' || (id[length] == SEPARATOR && id[length + 1] != '\0');
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *id = mosquitto_client_id(auth->client);
	const char *username = auth->username;

	(void)event;
	(void)userdata;
	if(username == NULL || username[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "lanewatch: refused client %s: no username", id ? id : "(none)");
		return MOSQ_ERR_AUTH;
	}
	if(!certificate_is(auth->client, username)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"lanewatch: refused user %s: its client certificate is not issued to %s", username, username);
		return MOSQ_ERR_AUTH;
	}
	if(id == NULL || !id_belongs_to(id, username)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"lanewatch: refused user %s: client id %s is not %s or %s%c...", username, id ? id : "(none)",
				username, username, SEPARATOR);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
