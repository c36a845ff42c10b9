/* Unit tests of the order request fingerprint that binds an idempotency key to its body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ot_order.h"

static void
fp_of(const char *text, char out[65])
{
	json_t *o = json_loads(text, 0, NULL);

	assert_non_null(o);
	assert_int_equal(ot_order_fingerprint(o, out), 0);
	json_decref(o);
}

static void
key_order_spacing_and_request_id_do_not_matter(void **state)
{
	char a[65], b[65];

	(void)state;
	fp_of("{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1}],\"address\":\"x\"}", a);
	fp_of("{ \"address\" : \"x\", \"request_id\":\"k1\", \"items\":[{\"qty\":1,\"sku\":\"A\"}],\"customer_id\":\"c\"}", b);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(strspn(a, "0123456789abcdef"), 64);
}

static void
a_changed_field_changes_it(void **state)
{
	char a[65], b[65], c[65];

	(void)state;
	fp_of("{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1}],\"address\":\"x\"}", a);
	fp_of("{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":2}],\"address\":\"x\"}", b);
	fp_of("{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1}],\"address\":\"y\"}", c);
	assert_string_not_equal(a, b);
	assert_string_not_equal(a, c);
}

static void
it_is_sha256_of_the_canonical_form(void **state)
{
	char a[65];

	(void)state;
	/* printf '{}' | sha256sum */
	fp_of("{\"request_id\":\"k\"}", a);
	assert_string_equal(a, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_order_spacing_and_request_id_do_not_matter),
		cmocka_unit_test(a_changed_field_changes_it),
		cmocka_unit_test(it_is_sha256_of_the_canonical_form),
	};
	return cmocka_run_group_tests_name("order fingerprint", tests, NULL, NULL);
}
