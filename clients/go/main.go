// Command quickstart is Punctual's quick start in Go: it schedules a post,
// reads it back, lists it and cancels it, and exits non-zero, saying what
// differed, on any unexpected answer.
//
// Generate the client into punctual.dev/api/punctual/v1 first (see
// docs/clients.md), then:
//
//	go run . -server 127.0.0.1:50051
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	punctualv1 "punctual.dev/api/punctual/v1"
)

// A number no double holds exactly: it must come back as it was sent.
const payloadJSON = `{"text":"hello","n":12345678901234567890}`

func main() {
	server := flag.String("server", "127.0.0.1:50051", "host:port of the Punctual server")
	flag.Parse()
	if err := run(*server); err != nil {
		fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("go quick start: OK")
}

func run(server string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// PUNCTUAL_TOKEN: the bearer token, when the server requires one.
	if token := os.Getenv("PUNCTUAL_TOKEN"); token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}

	// Plain-text HTTP/2, as `punctual serve` speaks on loopback. (Newer grpc
	// releases spell this grpc.WithTransportCredentials(insecure.NewCredentials()).)
	conn, err := grpc.DialContext(ctx, server, grpc.WithInsecure())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", server, err)
	}
	defer conn.Close()
	client := punctualv1.NewSchedulerClient(conn)

	// Whole seconds, so the instant compares equal after the round trip.
	instant := time.Now().UTC().Truncate(time.Second).Add(time.Hour)
	business := "quickstart-go"

	created, err := client.CreateSchedule(ctx, &punctualv1.CreateScheduleRequest{
		BusinessId:  business,
		ContentId:   "hello-1",
		Platform:    "x",
		PayloadJson: payloadJSON,
		When:        &punctualv1.CreateScheduleRequest_ScheduledFor{ScheduledFor: timestamppb.New(instant)},
		TimeZone:    "America/New_York",
	})
	if err != nil {
		return fmt.Errorf("CreateSchedule: %w", err)
	}
	fmt.Printf("created   %s for %s America/New_York\n", created.GetId(), created.GetLocalTime())
	if created.GetId() == "" {
		return fmt.Errorf("CreateSchedule answered no id")
	}
	if created.GetStatus() != punctualv1.ScheduledPost_SCHEDULED {
		return fmt.Errorf("new post is %s, not SCHEDULED", created.GetStatus())
	}

	fetched, err := client.GetSchedule(ctx, &punctualv1.GetScheduleRequest{Id: created.GetId()})
	if err != nil {
		return fmt.Errorf("GetSchedule: %w", err)
	}
	fmt.Printf("fetched   %s: payload_json %s\n", fetched.GetId(), fetched.GetPayloadJson())
	if fetched.GetPayloadJson() != payloadJSON {
		return fmt.Errorf("payload_json came back as %q, sent %q", fetched.GetPayloadJson(), payloadJSON)
	}
	if got := fetched.GetScheduledFor().AsTime(); !got.Equal(instant) {
		return fmt.Errorf("scheduled_for came back as %s, sent %s", got, instant)
	}

	// Page through the business's posts at that instant until ours shows up.
	found, listed, pageToken := false, 0, ""
	for {
		page, err := client.ListSchedules(ctx, &punctualv1.ListSchedulesRequest{
			BusinessId: business,
			FromTime:   timestamppb.New(instant),
			ToTime:     timestamppb.New(instant.Add(time.Second)),
			PageSize:   100,
			PageToken:  pageToken,
		})
		if err != nil {
			return fmt.Errorf("ListSchedules: %w", err)
		}
		for _, post := range page.GetSchedules() {
			listed++
			found = found || post.GetId() == created.GetId()
		}
		pageToken = page.GetNextPageToken()
		if found || pageToken == "" {
			break
		}
	}
	fmt.Printf("listed    %d post(s) of %s at that instant\n", listed, business)
	if !found {
		return fmt.Errorf("ListSchedules did not return %s", created.GetId())
	}

	cancelled, err := client.CancelSchedule(ctx, &punctualv1.CancelScheduleRequest{Id: created.GetId()})
	if err != nil {
		return fmt.Errorf("CancelSchedule: %w", err)
	}
	fmt.Printf("cancelled %s\n", cancelled.GetId())
	if cancelled.GetStatus() != punctualv1.ScheduledPost_CANCELLED {
		return fmt.Errorf("CancelSchedule answered %s", cancelled.GetStatus())
	}

	again, err := client.GetSchedule(ctx, &punctualv1.GetScheduleRequest{Id: created.GetId()})
	if err != nil {
		return fmt.Errorf("GetSchedule after cancelling: %w", err)
	}
	if again.GetStatus() != punctualv1.ScheduledPost_CANCELLED {
		return fmt.Errorf("after cancelling, GetSchedule says %s", again.GetStatus())
	}
	fmt.Printf("fetched   %s: %s\n", again.GetId(), again.GetStatus())
	return nil
}
