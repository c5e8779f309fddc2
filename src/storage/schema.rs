//! The one table layout shared by both backends. Instants are BIGINT
//! microseconds since the Unix epoch (UTC): the precision PostgreSQL keeps,
//! ordered and compared the same way on SQLite.

diesel::table! {
    posts (id) {
        id -> Text,
        business_id -> Text,
        content_id -> Text,
        platform -> Text,
        payload -> Text,
        scheduled_for_us -> BigInt,
        time_zone -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at_us -> BigInt,
        published_at_us -> Nullable<BigInt>,
        external_id -> Nullable<Text>,
        version -> BigInt,
        request_id -> Nullable<Text>,
        create_time_us -> BigInt,
        update_time_us -> BigInt,
        attempt_log -> Text,
        partition_no -> Integer,
        claim_epoch -> BigInt,
        trace_parent -> Nullable<Text>,
        labels -> Text,
    }
}

diesel::table! {
    queue_pauses (business_id, platform) {
        business_id -> Text,
        platform -> Text,
        pause_time_us -> BigInt,
    }
}

diesel::table! {
    posting_slots (business_id, platform) {
        business_id -> Text,
        platform -> Text,
        time_zone -> Text,
        slots -> Text,
        update_time_us -> BigInt,
    }
}

diesel::table! {
    engagement (post_id) {
        post_id -> Text,
        business_id -> Text,
        platform -> Text,
        published_at_us -> BigInt,
        impressions -> BigInt,
        clicks -> BigInt,
        reactions -> BigInt,
        record_time_us -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(posts, queue_pauses);
